"""Pod namespace and name from the kubelet's pod log directory
(/var/log/pods/<namespace>_<name>_<uid>) or the downward API."""

from otel_fsnotify.enrich.pods import PodNames

UID = "0d9c3f0e-6a7b-4c1d-9e2f-3a4b5c6d7e8f"


def test_a_pod_is_named_from_its_log_directory_even_one_that_appears_later(tmp_path, monkeypatch):
    names = PodNames(str(tmp_path), environ={})
    assert names.of(UID) == ("", "")
    (tmp_path / f"kube-system_coredns-5d78c9869d-abcde_{UID}").mkdir()
    (tmp_path / "not-a-pod").mkdir()
    monkeypatch.setattr("otel_fsnotify.enrich.pods.RESCAN_S", 0.0)
    assert names.of(UID) == ("kube-system", "coredns-5d78c9869d-abcde")
    assert names.of("") == ("", "")


def test_the_downward_api_names_the_agents_own_pod_without_any_directory(tmp_path):
    env = {"POD_UID": UID.upper(), "POD_NAMESPACE": "shop", "POD_NAME": "cart-0"}
    assert PodNames(str(tmp_path / "missing"), environ=env).of(UID) == ("shop", "cart-0")
