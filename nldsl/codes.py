"""Every diagnostic code the front end can emit: a stable number, a title and how to fix it.

The language reference (docs/diagnostics.md) is checked against this table by the test suite.
"""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    title: str
    fix: str
    severity: str = "error"


CODES: dict[str, Code] = {
    # syntax
    "NL001": Code("syntax error", "Fix the token the caret points at; the message lists what was expected."),
    "NL002": Code("unexpected character", "Remove the character or quote it inside a string."),
    "NL003": Code("unexpected end of file", "Close the open brace, bracket or parenthesis."),
    "NL004": Code("expression nested too deeply", "Split the expression into named values, one per line."),
    # files and imports
    "NL010": Code("import not found", "Import a path relative to the spec or to the spec library."),
    "NL011": Code("import cycle", "Break the cycle: imported files must not import their importer."),
    "NL012": Code("cannot read spec file", "Check the path and that the file is UTF-8 text."),
    "NL013": Code("nothing to check", "A spec file needs at least one `model` or `optimizer`."),
    "NL014": Code("import is not a spec file", "Import a `.nl` spec file; nothing else is read."),
    # names
    "NL020": Code("unknown name", "Define the value before using it, or fix the spelling."),
    "NL021": Code("duplicate definition", "Rename one of the two definitions."),
    "NL022": Code("unknown function or structure", "Use a built-in listed in the language reference."),
    "NL023": Code("not a memory", "Only names declared with `memory` can be learned or called like a map."),
    "NL024": Code("reserved name", "Pick another name: this one is a keyword or a built-in."),
    "NL025": Code("used before it is assigned", "Move the assignment above its first use."),
    "NL026": Code("memory used as a value", "Call the memory on an input, e.g. `M(x)`."),
    "NL027": Code(
        "`self` or `fixed` outside an objective",
        "`self` names the memory being learned and `fixed` holds a value for its gradient: use them only in a "
        "`learn` objective.",
    ),
    # options and arguments
    "NL030": Code("unknown option", "Use one of the options the reference lists for this call."),
    "NL031": Code("wrong number of arguments", "Pass the positional arguments the call expects."),
    "NL032": Code("wrong option type", "Give the option a value of the type it expects."),
    "NL033": Code("option given twice", "Remove one of the repeated options or modifiers."),
    "NL034": Code("invalid option value", "Use one of the listed values."),
    "NL035": Code("not a constant", "Structure sizes and periods must be numbers known before training."),
    # model header
    "NL040": Code("missing model parameter", "Declare it in the model header, e.g. `model M(vocab = 256, ...)`."),
    "NL041": Code("heads not declared", "`per head` needs a `heads` parameter in the model header."),
    "NL042": Code("bad parameter value", "Model parameters must be positive numbers; sizes must be integers."),
    "NL043": Code(
        "model too large for any machine",
        "Its parameters alone, in float32, exceed 1 TiB: check the sizes (`nldsl explain` shows each part).",
        "warning",
    ),
    # shapes
    "NL050": Code("width mismatch", "Both sides of an elementwise operation need the same width (or width 1)."),
    "NL051": Code("memory input width mismatch", "Feed the memory vectors of its declared input width."),
    "NL052": Code("width not divisible by heads", "Make the width a multiple of `heads`."),
    "NL053": Code("residual needs equal widths", "Drop `residual` or make `out` equal to `in`."),
    "NL054": Code("objective is not a scalar", "Reduce the objective to one number per token, e.g. with `l2(...)`."),
    "NL055": Code("coefficient width", "Learning rates and gates must be scalars or one value per head."),
    "NL056": Code("matmul shape mismatch", "The left operand's width must equal the matrix's first size."),
    "NL057": Code("block output width", "The residual stream `h` must keep the model width `dim`."),
    # time
    "NL060": Code(
        "period does not divide the context",
        "Choose a period that divides `context`, or accept the flushed partial chunk.",
        "warning",
    ),
    "NL061": Code(
        "periods are not nested", "Make each period divide the next slower one so firing patterns stay few.", "warning"
    ),
    "NL062": Code(
        "chunk and period conflict",
        "A memory updated every P tokens already holds its state fixed for P tokens; drop `chunk`.",
    ),
    "NL063": Code(
        "gradient reference point reads the future", "Use `grad at chunk_start`: the state at the previous chunk's end."
    ),
    "NL064": Code(
        "period never fires within a sequence",
        "Use a shorter period, `scope persistent`, or make it a plain parameter.",
        "warning",
    ),
    "NL065": Code("time base not allowed here", "Model memories update per token; optimizer states per step."),
    "NL066": Code("bad period", "Periods and chunk sizes are positive integers."),
    "NL067": Code(
        "CMS levels out of order", "List the levels of a chained CMS fastest first, as the paper does.", "warning"
    ),
    "NL068": Code(
        "chunk longer than the context",
        "A chunk of C tokens takes every gradient of C tokens at one state; keep C within `context`.",
        "warning",
    ),
    # levels and the graph
    "NL070": Code("dependency cycle", "Break the cycle with `read before` on one of the memories."),
    "NL071": Code(
        "level assertion is wrong", "Change the asserted level to the derived one, or change the frequencies."
    ),
    "NL072": Code("unused memory", "Read the memory somewhere, or delete it.", "warning"),
    "NL073": Code("unused value", "Use the value or delete the assignment.", "warning"),
    "NL074": Code(
        "parameter gets no outer gradient",
        "Let the gradient through (`backprop through`) or freeze the parameter.",
        "warning",
    ),
    "NL075": Code("learned initial state never trained", "Use `backprop through` or `first_order`, or `init zeros`."),
    "NL076": Code(
        "persistent memory's learned initial state trains once",
        "Start it with `init identity` or `init zeros`, or use `scope sequence`.",
        "warning",
    ),
    # learning
    "NL080": Code("memory learned twice", "Merge the two `learn` statements."),
    "NL081": Code("objective ignores the memory", "Call `self(...)` in the objective, or the gradient is zero."),
    "NL082": Code("non-parametric memory cannot be learned", "Attention is re-solved per query; remove the `learn`."),
    "NL083": Code(
        "teach signal is expensive",
        "Outer-gradient objectives force chunk-by-chunk forward/backward; prefer a local objective when you can.",
        "warning",
    ),
    "NL084": Code("rule does not fit the memory", "Check the rule's requirements in the reference."),
    "NL085": Code("frozen memory is learned", "Remove `frozen`, or remove the `learn`."),
    "NL086": Code("parameter update missing or not last", "An optimizer body must end in `param = ...`."),
    "NL087": Code(
        "block operation on a memory's output in its objective",
        "Apply `conv`, `rope` and other memories to the inputs of `self(...)`, not to what it returns.",
    ),
    # the outer level
    "NL090": Code("unknown optimizer", 'Import the optimizer spec, e.g. `import "optim/adamw.nl"`.'),
    "NL091": Code("bad train setting", "Use a setting the reference lists for `train`."),
    "NL092": Code("no train block", "Add `train { optimize all by adamw(...) }` to train this model.", "warning"),
    "NL093": Code("parameter in two groups", "Each parameter belongs to exactly one `optimize` group."),
}
