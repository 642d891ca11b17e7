"""--exclude: a basename anywhere, or a full path with ** for any depth; a
pattern that can never match under the watched paths is refused."""

from __future__ import annotations

import pytest

from otel_fsnotify.fim.excludes import ExcludeError, Excludes


def test_a_pattern_without_a_slash_matches_a_basename_at_any_depth():
    ex = Excludes(["*.swp", ".git"], ["/srv"])
    assert ex.excluded("/srv/a/b/.notes.swp")
    assert ex.excluded("/srv/repo/.git/objects/ab/cdef")  # everything under it
    assert not ex.excluded("/srv/repo/git.txt")
    assert not ex.excluded("/srv/a.swp.bak")


def test_a_pattern_with_a_slash_matches_the_full_path():
    ex = Excludes(["/etc/ssl/certs", "/etc/*.bak", "/etc/**/cache/*"], ["/etc"])
    assert ex.excluded("/etc/ssl/certs/ca.pem")
    assert ex.excluded("/etc/passwd.bak")
    assert not ex.excluded("/etc/sub/passwd.bak")  # * stays within one component
    assert ex.excluded("/etc/a/b/cache/x") and ex.excluded("/etc/cache/x")
    assert not ex.excluded("/etc/ssl/certsx")


def test_double_star_at_the_front_matches_under_any_watched_path():
    ex = Excludes(["**/node_modules"], ["/srv", "/opt"])
    assert ex.excluded("/opt/app/node_modules/left-pad/index.js")


@pytest.mark.parametrize("pattern, why", [
    ("/var/log/*.log", "can never match"),
    ("logs/*.log", "start it with / or **"),
    ("", "empty"),
])
def test_a_pattern_that_cannot_work_is_one_line(pattern, why):
    with pytest.raises(ExcludeError) as err:
        Excludes([pattern], ["/etc", "/usr/bin"])
    assert why in str(err.value) and "\n" not in str(err.value)


def test_a_pattern_above_the_watched_path_can_match():
    assert Excludes(["/*/tmp-*"], ["/srv"]).excluded("/srv/tmp-1")
