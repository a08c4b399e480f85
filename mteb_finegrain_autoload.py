"""Start-up hook of mteb-finegrain, run from ``mteb_finegrain.pth`` by every Python process.

It must cost nothing for processes that never import mteb: it only puts a finder on
``sys.meta_path`` that watches for the module name ``mteb`` and otherwise does nothing. When mteb
has finished importing, the FineGrainHidden tasks are registered with it (so ``mteb run -t
FineGrainHidden`` works with no user import), and when ``mteb.cli`` is imported its ``main`` is
wrapped so that input errors of this plugin print one line instead of a traceback.

``mteb_finegrain.task`` is watched too, when it is imported before mteb: its own import of mteb
reaches the plugin while the task module is incomplete, so the tasks are registered when it is.
"""

import sys

_WATCHED = ("mteb", "mteb.cli")
_TASK_MODULE = "mteb_finegrain.task"


class _AfterImport:  # a Loader by duck typing: importlib.abc costs ~40 ms to import
    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            import mteb_finegrain._plugin as plugin
        except Exception as exc:  # a broken plugin must never break mteb itself
            sys.stderr.write(f"mteb-finegrain: plugin not loaded ({exc!r})\n")
            return
        plugin.on_import(self._name, module)

    def __getattr__(self, attr):  # get_resource_reader, is_package, ... go to the real loader
        return getattr(self._loader, attr)


class _MtebFinder:  # a MetaPathFinder by duck typing
    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCHED and (fullname != _TASK_MODULE or "mteb" in sys.modules):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _AfterImport(spec.loader, fullname)
                return spec
        return None


if not any(isinstance(f, _MtebFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MtebFinder())
