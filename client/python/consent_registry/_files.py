"""Files replaced atomically."""
import os
import tempfile


def write_atomically(path, write, prefix=".tmp-"):
    """Replaces the file at `path` with what `write(f)` writes to a binary
    file object: written to a temporary file in the same directory (mode
    0600, as mkstemp makes it), synced, renamed over `path`, and the
    directory synced. After a crash `path` holds the old content or the new,
    never a torn one. Returns what `write` returned; on an exception the
    temporary file is removed and `path` is left as it was."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return result
