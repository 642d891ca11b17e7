"""File-integrity watch mode: the paths the user names, their baseline, and
the changes to them (work in progress: not yet wired into `run`)."""
