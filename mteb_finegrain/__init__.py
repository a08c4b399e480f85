"""mteb-finegrain: how much fine-grained label information each hidden layer of a model holds.

Importing the package registers the FineGrainHidden tasks with mteb (the installed start-up hook
does the same for the plain ``mteb`` CLI).
"""

from mteb_finegrain._version import __version__
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import PROTOCOL_VERSION, Protocol

import mteb as _mteb  # noqa: E402  (registration needs mteb imported)

from mteb_finegrain._plugin import on_import as _on_import  # noqa: E402

_on_import("mteb", _mteb)

from mteb_finegrain.encoder import LayerEncoder  # noqa: E402

__all__ = ["PROTOCOL_VERSION", "FineGrainError", "LayerEncoder", "Protocol", "__version__"]
