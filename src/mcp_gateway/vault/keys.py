"""Master keys: where they come from (an environment value, a 0600 key file) and how the file is written.

A key file is JSON ``{"current": kid, "keys": {kid: b64key}}``. It must be a regular file owned by the
current user with no permission bits beyond 0600; anything looser is refused, because whoever reads
it opens every envelope. Writes go to a private temporary file, are fsynced, and are renamed into
place, so a reader never sees half a key file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from pathlib import Path

from mcp_gateway.errors import VaultError
from mcp_gateway.vault.crypto import Keyring, MasterKey, decode_key, encode_key

_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")


def load_keyring(*, env_value: str | None, key_file: Path | None) -> Keyring | None:
    """Assemble the master keyring from an environment value and/or a key file.

    Args:
        env_value: urlsafe-base64 key text, or a comma-separated list of them (first = current).
            Empty text counts as absent.
        key_file: a JSON key file ``{"current": kid, "keys": {kid: b64key}}`` (see ``write_key_file``);
            it must be a regular file owned by the current user with mode 0600 or stricter.

    Returns:
        The keyring, or ``None`` (a sealed vault) when neither source is given. With both, the
        environment's first key is current and the file's keys are kept for unsealing.

    Raises:
        VaultError: a key is malformed, or the key file is missing, unreadable, invalid, not owned by
            the current user or too permissive. Messages name the path and mode, never a key.
    """
    keys: list[MasterKey] = []
    for part in (env_value or "").split(","):
        if part.strip():
            try:
                keys.append(decode_key(part))
            except VaultError as exc:
                raise VaultError(f"master key from the environment is invalid: {exc}") from None
    if key_file is not None:
        keys.extend(_read_key_file(Path(key_file)))
    unique: list[MasterKey] = []
    for key in keys:
        if key not in unique:  # MasterKey equality compares key ids
            unique.append(key)
    return Keyring(unique[0], tuple(unique[1:])) if unique else None


def _read_key_file(path: Path) -> list[MasterKey]:
    """The file's keys, current first."""
    try:
        with open(path, "rb") as fh:
            # fstat the open file, not the path, so the file checked is the file read.
            st = os.fstat(fh.fileno())
            data = fh.read() if stat.S_ISREG(st.st_mode) else b""
    except OSError as exc:
        raise VaultError(f"cannot read key file `{path}`: {exc.strerror}") from exc
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        raise VaultError(f"key file `{path}` is not a regular file")
    if st.st_uid != os.geteuid():
        raise VaultError(
            f"key file `{path}` is owned by uid {st.st_uid}, not the current user ({os.geteuid()})"
        )
    if mode & ~0o600:
        raise VaultError(
            f"key file `{path}` is too permissive (mode {mode:04o}); it must be 0600 or stricter"
        )
    invalid = VaultError(f'key file `{path}` is not valid: expected {{"current": kid, "keys": {{kid: key}}}}')
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    # Raised outside the except block: a JSON error carries the whole document (the keys) as context.
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict) or not doc["keys"]:
        raise invalid
    current = doc.get("current")
    keys: dict[str, MasterKey] = {}
    for kid, text in doc["keys"].items():
        if not isinstance(text, str):
            raise invalid
        if not _KEY_ID_RE.fullmatch(kid):
            # Not echoed: a key pasted where its id belongs must not reach an error message.
            raise VaultError(f"key file `{path}`: every key id must be 16 lowercase hex digits")
        try:
            key = decode_key(text)
        except VaultError as exc:
            raise VaultError(f"key file `{path}`: key `{kid}` is invalid: {exc}") from None
        if key.key_id != kid:
            raise VaultError(f"key file `{path}`: the key listed as `{kid}` has id `{key.key_id}`")
        keys[kid] = key
    if not isinstance(current, str) or current not in keys:
        raise VaultError(f"key file `{path}`: `current` must name one of its keys")
    return [keys[current], *(key for kid, key in keys.items() if kid != current)]


def _key_file_bytes(keyring: Keyring) -> bytes:
    keys = {key.key_id: encode_key(key) for key in (keyring.current, *keyring.others)}
    return json.dumps({"current": keyring.current.key_id, "keys": keys}, indent=2).encode("ascii") + b"\n"


def _write_private_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new 0600 file next to ``path`` and fsync it; the caller moves it into place."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # Created 0600 by open(2) itself, so the key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: Path, keyring: Keyring) -> None:
    """Atomically write ``keyring`` to ``path`` (0600; temp file, fsync, rename, fsync directory).

    Raises:
        VaultError: the file cannot be written.
    """
    path = Path(path)
    try:
        tmp = _write_private_temp(path, _key_file_bytes(keyring))
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    except OSError as exc:
        raise VaultError(f"cannot write key file `{path}`: {exc.strerror}") from exc


def init_key_file(path: Path) -> bool:
    """Create a key file holding one new master key unless the file exists.

    Returns:
        ``True`` if this call created the file, ``False`` if one was already there (it is then
        checked like ``load_keyring`` does, so a bad existing file is reported at once).

    Raises:
        VaultError: the file cannot be written, or the existing file fails the checks of ``load_keyring``.
    """
    path = Path(path)
    created = False
    if not path.exists():
        try:
            tmp = _write_private_temp(path, _key_file_bytes(Keyring(MasterKey.generate())))
            try:
                # link(2) fails if the path exists, so a key file made meanwhile by another process is
                # never replaced (that would orphan whatever it already sealed).
                os.link(tmp, path)
                created = True
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            _fsync_dir(path.parent)
        except OSError as exc:
            raise VaultError(f"cannot write key file `{path}`: {exc.strerror}") from exc
    _read_key_file(path)
    return created
