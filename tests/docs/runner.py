"""Runs a page's examples as one script: ``python runner.py < spec.json`` (see ``pages.py``).

The spec names the page (``path``) and lists its runnable blocks (``line``, ``source``). Each
block runs in turn in one fresh ``__main__`` module, as a script made of the blocks pasted one
after the other would. Line numbers are those of the page, so a traceback points into the
Markdown file. Before each block the runner prints ``separator`` (formatted with the block's
index) so that the caller can tell each block's output apart. The first block that raises
ends the run: its traceback goes to stderr and the exit status is 1.
"""

from __future__ import annotations

import builtins
import json
import sys
import traceback
import types


def main() -> int:
    spec = json.load(sys.stdin)
    path: str = spec["path"]
    separator: str = spec["separator"]
    # A fresh __main__, as for `python script.py`: functions defined by the page belong to
    # it, so the queue stores them as it would a script's (with dill, by value).
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    for index, block in enumerate(spec["blocks"]):
        print(separator.format(index), flush=True)
        try:
            # Blank lines in front: line numbers (syntax errors too) are the page's.
            source = "\n" * (block["line"] - 1) + block["source"]
            exec(compile(source, path, "exec"), module.__dict__)
        except BaseException:
            sys.stdout.flush()
            traceback.print_exc()
            return 1
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
