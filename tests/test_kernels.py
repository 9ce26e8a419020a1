"""Every numba kernel of the core releases the GIL.

Without ``nogil=True`` a kernel holds the GIL for its whole run, so the napari GUI freezes while
a thread worker computes (see CONVENTIONS.md, "numba").
"""

import importlib
import pkgutil

from numba.core.registry import CPUDispatcher

import napari_metaseg.core as core

#: Fewer kernels than this means the search below went wrong (the core has about 30).
MIN_KERNELS = 15


def _core_kernels():
    """``{"module.name": dispatcher}`` of the numba kernels defined at module level in the core."""
    kernels = {}
    for info in pkgutil.iter_modules(core.__path__, prefix=f"{core.__name__}."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            # Count a kernel in the module that defines it, not in those that import it.
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__:
                kernels[f"{module.__name__}.{name}"] = obj
    return kernels


def test_every_core_kernel_releases_the_gil():
    kernels = _core_kernels()
    assert len(kernels) >= MIN_KERNELS, f"found only {len(kernels)} numba kernels: {sorted(kernels)}"
    missing = sorted(name for name, d in kernels.items() if d.targetoptions.get("nogil") is not True)
    assert missing == [], (
        f"{len(missing)} of {len(kernels)} numba kernels lack nogil=True (the GUI freezes while "
        f"they run in a worker thread): {', '.join(missing)}"
    )
