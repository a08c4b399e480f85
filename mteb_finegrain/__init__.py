"""mteb-finegrain: how much fine-grained label information each hidden layer of a model holds.

The FineGrainHidden tasks are registered with mteb when mteb is imported (the installed start-up
hook, ``mteb_finegrain.pth``); importing this package registers them at once when mteb is already
loaded. The package itself stays light: ``mteb_finegrain.leaderboard`` and the protocol import no
torch; ``LayerEncoder`` is loaded on first use.
"""

import sys as _sys

from mteb_finegrain._version import __version__
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import PROTOCOL_VERSION, Protocol

if "mteb" in _sys.modules:  # mteb came first (or without the start-up hook): register now
    from mteb_finegrain._plugin import on_import as _on_import

    _on_import("mteb", _sys.modules["mteb"])


def __getattr__(name: str):
    if name == "LayerEncoder":
        from mteb_finegrain.encoder import LayerEncoder

        return LayerEncoder
    raise AttributeError(f"module 'mteb_finegrain' has no attribute {name!r}")


__all__ = ["PROTOCOL_VERSION", "FineGrainError", "LayerEncoder", "Protocol", "__version__"]
