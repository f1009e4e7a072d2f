"""Run first by every Python process ``callscope run`` starts (see ``callscope._bridge.zero_code``);
then the ``sitecustomize`` this one shadows, if the environment has one."""

import os
import sys


def _start_callscope() -> None:
    if os.environ.get("CALLSCOPE_RUN") != "1":
        return
    try:
        from callscope._bridge.zero_code import start
    except ImportError as error:
        sys.stderr.write(
            f"callscope run: {sys.executable} cannot import callscope ({error}), so this process runs "
            "untraced; install callscope into that Python, or run the command with the Python callscope "
            "is installed in (e.g. `callscope run -- python -m ...` from its virtual environment)\n"
        )
        return
    start()


def _load_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    this = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  (the application's own, further down the path)
    except ImportError as error:
        if error.name != "sitecustomize":
            raise
        if this is not None:
            sys.modules["sitecustomize"] = this
    finally:
        sys.path[:] = saved


_start_callscope()
_load_shadowed_sitecustomize()
