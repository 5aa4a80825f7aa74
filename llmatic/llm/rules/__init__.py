"""A rule-based code mutator: the non-LLM baseline and offline default (``llm=rules``).

This is **not a language model**. :class:`RuleBasedMutator` is a classic evolutionary-NAS
variation operator, in the spirit of the hand-written mutations of regularized evolution, that
takes the LLM's place in the LLMatic loop. It reads a request's ``instruction`` and ``parents``
(never its ``prompt``), edits the parent network's Python syntax tree with :mod:`ast`, and
returns the edited module as source code (:func:`ast.unparse`). It lets every experiment run
offline, and it makes "LLM vs. no LLM" a single config override (``llm=rules``).

What it does:

* It maps each of the paper's 13 mutation instructions, and the 4 optional width/depth ones, to
  an edit by case-insensitive keywords (for example "convolutional" inserts a convolution).
  Text it does not recognise gets a random edit.
* It edits the classifier head too: ``drop_output_activation`` removes an activation applied
  to the logits (the seed network's ``relu(fc1(x))`` puts many networks at chance),
  ``widen_head`` widens (at the cap: re-sizes) the last hidden layer before the classifier,
  and ``add_head`` inserts a hidden ``relu(LazyLinear)`` right before it. Each has its own
  instruction keywords; "improve the above network" may pick the last two. Like an LLM that
  rewrites a network and returns raw logits, every other edit (and crossover) also drops an
  activation on the logits with probability ``HEAD_FIX_P`` (0.8), and (unless it shrinks the
  network) widens hidden layers narrower than 4 units to 16 with the same probability. No
  edit narrows a layer below 4 units.
* An edit that finds nothing to change gives a completion whose ``error`` says so, never an
  unchanged copy of the parent.
* Given two parents it splices them: a one-point crossover at a cut where the shapes fit. By
  default the cut is at the flatten, so one parent gives the feature extractor and the other
  the classifier head.
* The temperature sets how big the change is: ``1 + Binomial(2, temperature)`` edits, and a
  wider choice of widths and kernel sizes when it is high; one small edit when it is low.
* It keeps the child runnable. Layers whose input size could change become PyTorch lazy modules
  (``nn.Conv2d(3, 16, 3)`` becomes ``nn.LazyConv2d(16, 3)``). Inserted convolutions keep H and
  W. Pooling uses ``ceil_mode=True``, so no feature map shrinks below 1x1. Residual and
  recurrent layers are small helper classes that adapt to any input. The final classifier's
  output size never changes. Widths and layer counts are capped so children stay small
  enough to train on a CPU.

What it does not do: it never executes or imports the code it edits; it does not learn from
the search; it adds no layer kinds beyond those above. It fully understands only networks of
the canonical shape: ``__init__`` assigns ``self.name = nn.Layer(...)``, and ``forward`` applies
the layers one statement at a time, 4-D (B, C, H, W) before a flatten and 2-D (B, F) after it.
Other code (``nn.Sequential`` stacks, loops over ``nn.ModuleList``, hand-written skip
connections) it edits only where it can show that the shapes still fit. Where no edit fits, it
returns a completion whose ``error`` says why.

Children contain lazy modules, whose parameters exist only after a first forward pass. Run one
dry batch before counting parameters or building an optimizer.

The package, in reading order (each module imports only from those above it):

* ``errors``, ``vocab``, ``helpers``: the exception every stage raises, what the mutator knows
  about PyTorch layers, and the helper classes it adds to children.
* ``instructions``: instruction text -> edit name (:func:`classify_instruction`).
* ``astutil``, ``forward``: syntax-tree helpers, and reading ``forward`` as layer chains.
* ``layers``, ``network``: the parsed network (``_Net``): its layers, then the layout of its
  ``forward`` (where a layer fits, and whether the layers after it absorb a change of shape).
* ``load``, ``render``: from a parent's source to a ``_Net``, and from a ``_Net`` to a child's.
* ``edits``: the edits, one module per family, and the registry that names them.
* ``crossover``: splicing two parents.
* ``mutator``: :class:`RuleBasedMutator`, the generator ``conf/llm/rules.yaml`` names.
"""

from llmatic.llm.rules.edits.fixes import HEAD_FIX_P
from llmatic.llm.rules.edits.head import output_activation
from llmatic.llm.rules.edits.resize import BOTTLENECK_WIDTH
from llmatic.llm.rules.instructions import classify_instruction
from llmatic.llm.rules.mutator import RuleBasedMutator

# isort: split
# Not API. tests/llm/test_rules_head.py reads these two tables through the package
# (``rules._MUTATIONS``, ``rules._HELPER_SOURCES``), as it did when rules was one module.
from llmatic.llm.rules.edits.registry import _MUTATIONS as _MUTATIONS
from llmatic.llm.rules.helpers import _HELPER_SOURCES as _HELPER_SOURCES

__all__ = [
    "BOTTLENECK_WIDTH",
    "HEAD_FIX_P",
    "RuleBasedMutator",
    "classify_instruction",
    "output_activation",
]
