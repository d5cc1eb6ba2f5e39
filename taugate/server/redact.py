"""Client-facing messages name the bundle by its directory name, never by an absolute path.

The runtime's errors are written for the operator (``missing from bundle '/srv/models/b'``,
``resolves to /etc/passwd, outside the bundle directory ...``); an HTTP client learns nothing
useful from the server's file layout and an attacker learns too much. :class:`PathRedactor`
rewrites such a message before it is answered: the bundle directory (as given and resolved)
becomes its name, any other absolute path ``<path>``. Logs keep the original.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# An absolute path as error messages write it: POSIX (/a/b) or Windows (C:\\a, \\\\server\\s),
# up to a quote, whitespace or a separator of the sentence around it (a lone ``/`` is not one). Not preceded by a word
# character, a dot or a slash, so relative names such as ``modes/m0.onnx`` stay as they are.
_ABSOLUTE = re.compile(r"(?<![\w./\\-])(?:/(?=[^\s'\"`,;()<>/])|[A-Za-z]:[\\/]|\\\\)"
                       r"[^\s'\"`,;()<>]*")


class PathRedactor:
    """Rewrites messages for clients: the bundle at ``root`` becomes ``name``; other absolute
    paths become ``<path>``."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        self.name = root.name or "bundle"
        forms = {os.fspath(root), os.path.abspath(root)}
        try:
            forms.add(os.fspath(root.resolve()))
        except (OSError, RuntimeError):  # a symlink loop: the other forms still apply
            pass
        # longest first, so that /a/bundle is replaced before a shorter /a it may contain
        self._roots = sorted((f for f in forms if os.path.isabs(f) and len(f) > 1),
                             key=len, reverse=True)

    def __call__(self, message: str) -> str:
        for root in self._roots:
            message = message.replace(root, self.name)
        return _ABSOLUTE.sub("<path>", message)

    def values(self, mapping: dict) -> dict:
        """``mapping`` with every value redacted (``/health``'s ``unavailable``)."""
        return {k: self(v) if isinstance(v, str) else v for k, v in mapping.items()}
