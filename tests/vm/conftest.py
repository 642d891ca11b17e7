# tests/vm/guest/ runs only inside the VM (tests/vm/guest_run.sh); on the host
# its results arrive through tests/vm/test_exact_backends_in_vm.py.
collect_ignore = ["guest"]
