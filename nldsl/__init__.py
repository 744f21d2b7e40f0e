"""nldsl: a declarative language and compiler for Nested Learning models.

The public API. Everything not imported here is internal.

    import nldsl
    result = nldsl.check_file("specs/hope.nl")     # diagnostics, never a traceback
    spec = nldsl.load_spec("specs/hope.nl")        # the checked spec, or SpecError
    graph = nldsl.nesting_graph("specs/hope.nl")   # networkx graph, derived levels
    nldsl.render("specs/hope.nl")                  # a diagram that displays as SVG in notebooks
    print(nldsl.explain("specs/hope.nl"))          # the levels as a table
    nldsl.parameter_count("specs/hope.nl", {"dim": 64})  # what the outer optimizer trains
    model = nldsl.load("specs/hope.nl")            # the compiled nn.Module: model(tokens) -> (logits, state)
    oracle = nldsl.reference("specs/hope.nl")      # the exact per-token interpreter of the same spec
    AdamW = nldsl.optimizer("specs/optim/adamw.nl")  # a torch.optim.Optimizer class
"""

from pathlib import Path as _Path

# In a source checkout (PYTHONPATH=.), the card's top-level backends/ and cli.py belong to this
# package as they do in the wheel; an installed package already has them inside.
_checkout = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "backends").is_dir() and (_checkout / "grammar" / "nl.lark").is_file():
    __path__.append(str(_checkout))

from nldsl.api import CheckResult as CheckResult  # noqa: E402
from nldsl.api import check_file as check_file  # noqa: E402
from nldsl.api import check_text as check_text  # noqa: E402
from nldsl.api import explain as explain  # noqa: E402
from nldsl.api import load as load  # noqa: E402
from nldsl.api import load_spec as load_spec  # noqa: E402
from nldsl.api import match_parameters as match_parameters  # noqa: E402
from nldsl.api import nesting_graph as nesting_graph  # noqa: E402
from nldsl.api import optimizer as optimizer  # noqa: E402
from nldsl.api import parameter_count as parameter_count  # noqa: E402
from nldsl.api import reference as reference  # noqa: E402
from nldsl.api import render as render  # noqa: E402
from nldsl.codes import CODES as CODES  # noqa: E402
from nldsl.diagnostics import Diagnostic as Diagnostic  # noqa: E402
from nldsl.diagnostics import SpecError as SpecError  # noqa: E402
from nldsl.spec import Spec as Spec  # noqa: E402

__version__ = "0.1.0"
