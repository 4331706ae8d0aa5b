"""pointseg.fileio: atomic writes with the umask's permissions (#12 item 3), nothing left behind."""
import os

from pointseg.fileio import atomic_write_bytes, default_file_mode


def test_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "sub" / "a.bin", b"data")
        assert (tmp_path / "sub" / "a.bin").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert default_file_mode() == 0o600
        atomic_write_bytes(tmp_path / "b.bin", b"data")
        assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.bin", "b.bin"]
