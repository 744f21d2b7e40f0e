"""nldsl: a declarative language and compiler for Nested Learning models.

The public API. Everything not imported here is internal.

    import nldsl
    result = nldsl.check_file("specs/hope.nl")     # diagnostics, never a traceback
    spec = nldsl.load_spec("specs/hope.nl")        # the checked spec, or SpecError
    graph = nldsl.nesting_graph("specs/hope.nl")   # networkx graph, derived levels
    nldsl.render("specs/hope.nl")                  # a diagram that displays as SVG in notebooks
    print(nldsl.explain("specs/hope.nl"))          # the levels as a table
"""

from nldsl.api import CheckResult as CheckResult
from nldsl.api import check_file as check_file
from nldsl.api import check_text as check_text
from nldsl.api import explain as explain
from nldsl.api import load_spec as load_spec
from nldsl.api import nesting_graph as nesting_graph
from nldsl.api import render as render
from nldsl.codes import CODES as CODES
from nldsl.diagnostics import Diagnostic as Diagnostic
from nldsl.diagnostics import SpecError as SpecError
from nldsl.spec import Spec as Spec

__version__ = "0.1.0"
