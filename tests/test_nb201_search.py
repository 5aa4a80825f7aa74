"""NAS-Bench-201 cells, their edits, the baselines, and the search over a benchmark table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import compose_config

from llmatic.nb201.arch import OPS, all_archs, arch_index, arch_string, parse_arch_string
from llmatic.nb201.baselines import random_cell, random_search, regularized_evolution
from llmatic.nb201.cells import parse_cell, read_cell, render_cell
from llmatic.nb201.mutate import classify_cell_instruction, crossover_cells, edit_cell
from llmatic.types import Status

SEED_CELL = ("nor_conv_3x3", "none", "nor_conv_3x3", "none", "none", "nor_conv_3x3")


# ----------------------------------------------------------------------- arch strings, cells
def test_arch_strings_round_trip_and_reject_malformed():
    archs = list(all_archs())
    assert len(archs) == 15625 == len(set(archs))
    for ops in archs[::97]:
        assert parse_arch_string(arch_string(ops)) == ops
        assert archs[arch_index(ops)] == ops
    text = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
            "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    assert parse_arch_string(text)[2] == "avg_pool_3x3"
    for bad in ("|nor_conv_3x3~0|+|none~0|", text.replace("avg_pool_3x3", "sep_conv_5x5"),
                text.replace("~2|", "~3|"), text.replace("skip_connect~0|", "")):
        with pytest.raises(ValueError):
            parse_arch_string(bad)


def test_render_and_parse_cell_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ops = random_cell(rng)
        assert parse_cell(render_cell(ops)) == ops


MESSY = [
    # (what an LLM wrote, the cell it means)
    ("Sure! Here is the improved cell:\n```python\n"
     + render_cell(SEED_CELL).replace("self.edge_2_0 = none(C)", "self.edge_2_0 = nn.Identity()")
     + "```\nThe skip connection helps gradients flow.",
     ("nor_conv_3x3", "skip_connect", "nor_conv_3x3", "none", "none", "nor_conv_3x3")),
    (render_cell(SEED_CELL).replace("none(C)", "nn.Conv2d(C, C, kernel_size=1, bias=False)", 1),
     ("nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3", "none", "none", "nor_conv_3x3")),
    (render_cell(SEED_CELL).replace("= nor_conv_3x3(C)", '= OPS["avg_pool_3x3"](C, C, 1)', 1)
     .replace("\n", "\r\n"),
     ("avg_pool_3x3", "none", "nor_conv_3x3", "none", "none", "nor_conv_3x3")),
    ("The best cell I know is |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
     "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2| which works well.",
     ("nor_conv_3x3",) * 3 + ("skip_connect",) + ("nor_conv_3x3",) * 2),
    # an edge the LLM deleted everywhere is `none`
    (render_cell(SEED_CELL).replace("        self.edge_3_2 = nor_conv_3x3(C)\n", "")
     .replace(" + self.edge_3_2(x2)", ""),
     ("nor_conv_3x3", "none", "nor_conv_3x3", "none", "none", "none")),
    # assigned twice: the last assignment counts, as in Python
    (render_cell(SEED_CELL).replace("        self.edge_3_2 = nor_conv_3x3(C)\n",
                                    "        self.edge_3_2 = nor_conv_3x3(C)\n"
                                    "        self.edge_3_2 = skip_connect(C)\n"),
     ("nor_conv_3x3", "none", "nor_conv_3x3", "none", "none", "skip_connect")),
    # deleted from __init__ only ("Delete a layer"): the edge is gone, i.e. none
    (render_cell(SEED_CELL).replace("        self.edge_3_2 = nor_conv_3x3(C)\n", ""),
     ("nor_conv_3x3", "none", "nor_conv_3x3", "none", "none", "none")),
    # the parent echoed, then the child (as completion models do): the child, not a merge
    (render_cell(SEED_CELL) + "\n\"\"\"Delete a layer to improve the above cell\"\"\"\n"
     + render_cell(SEED_CELL, class_name="NewCell")
     .replace("        self.edge_3_2 = nor_conv_3x3(C)\n", ""),
     ("nor_conv_3x3", "none", "nor_conv_3x3", "none", "none", "none")),
    # cut off at the token limit in the forward
    ("```python\n" + render_cell(("skip_connect",) * 6).split("    def forward")[0]
     + "    def forward(self, x0):\n        x1 = self.edge_1_0(x",
     ("skip_connect",) * 6),
    # a fenced class without forward, after prose
    ("Here you go:\n```python\n" + render_cell(("nor_conv_1x1",) * 6).split("\n    def forward")[0]
     + "\n```", ("nor_conv_1x1",) * 6),
    # NAS-Bench-201's own module names, and a Sequential around one conv
    (render_cell(SEED_CELL).replace("self.edge_1_0 = nor_conv_3x3(C)",
                                    "self.edge_1_0 = ReLUConvBN(C, C, 1, 1, 0, 1)")
     .replace("self.edge_2_0 = none(C)", "self.edge_2_0 = POOLING(C, C, 'avg')")
     .replace("self.edge_3_1 = none(C)",
              "self.edge_3_1 = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)")
     .replace("self.edge_3_0 = none(C)",
              "self.edge_3_0 = nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, padding=1), "
              "nn.BatchNorm2d(C))"),
     ("nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3",
      "nor_conv_3x3")),
    # several arch strings: the last one named; spaces around the separators
    ("Changing |none~0|+|none~0|none~1|+|none~0|none~1|none~2| into "
     "| nor_conv_3x3~0 | + | none~0 | none~1 | + | none~0 | none~1 | none~2 |",
     ("nor_conv_3x3",) + ("none",) * 5),
]


@pytest.mark.parametrize(("text", "expected"), MESSY)
def test_messy_answers_are_read_as_the_cell_they_mean(text, expected):
    ops, source, error = read_cell(text)
    assert error is None and ops == expected
    assert parse_cell(source) == expected  # canonical text for the next prompt


@pytest.mark.parametrize(("text", "fragment"), [
    (render_cell(SEED_CELL).replace("none(C)", "sep_conv_5x5(C)", 1), "sep_conv_5x5"),
    (render_cell(SEED_CELL).replace("self.edge_3_2 = ", "self.edge_3_3 = "), "edge_3_3"),
    ("I cannot help with that.", "no cell found"),
    (render_cell(SEED_CELL).replace("none(C)", "nn.Conv2d(C, C, 3, stride=2)", 1), "stride=2"),
    (render_cell(SEED_CELL).replace("none(C)", "nn.AvgPool2d(3)", 1), "AvgPool2d(3)"),
    ("def f(:\n  pass", "no cell found"),
    ("self.edge_3_2 = skip_connect(C)", "only 1 of the 6 edges"),
    ("x = " + "-" * 200_000 + "1", "more than 100,000"),
    ("self.edge_1_0 = " + "+".join(["a"] * 30_000), "nests too deeply"),
    ("self.edge_1_0 = " + "(" * 5000 + ")" * 5000, "no cell found"),
    ("```python\nclass Cell(nn.Module):\n    def __init__(self, C=16):\n"
     "        super().__init__()\n        self.edge_1_0 = sep_conv_3x3(C)\n```",
     "sep_conv_3x3"),
])
def test_unreadable_cells_name_the_problem(text, fragment):
    ops, _, error = read_cell(text)
    assert ops is None and fragment in error


def test_reading_a_cell_never_runs_it(tmp_path):
    marker = tmp_path / "pwned"
    hostile = render_cell(SEED_CELL).replace(
        "        super().__init__()\n",
        f"        super().__init__()\n        open({str(marker)!r}, 'w').write('x')\n"
        "        __import__('os').system('touch ' + " + repr(str(marker)) + ")\n",
    ) + f"\nopen({str(marker)!r}, 'w').write('x')\n"
    assert read_cell(hostile)[0] == SEED_CELL
    assert not marker.exists()


# ------------------------------------------------------------------------------- edits
def test_instructions_map_to_cell_edits():
    assert classify_cell_instruction("Add convolutional layer to improve the above cell") \
        == "conv3x3"
    assert classify_cell_instruction("Add multiple residual connections to improve the above "
                                     "cell") == "skips"
    assert classify_cell_instruction("Add residual connection to improve the above cell") \
        == "skip"
    assert classify_cell_instruction("Delete a layer to improve the above cell") == "delete"
    assert classify_cell_instruction("improve the above cell by reducing the size "
                                     "drastically") == "shrink"
    assert classify_cell_instruction("improve the above cell") == "improve"
    assert classify_cell_instruction("anything", n_parents=2) == "crossover"


def test_edits_do_what_the_instruction_says_and_always_change_the_cell():
    rng = np.random.default_rng(1)
    cost = {"none": 0, "skip_connect": 0, "avg_pool_3x3": 0, "nor_conv_1x1": 1,
            "nor_conv_3x3": 9}
    for _ in range(200):
        parent = random_cell(rng)
        for kind in ("conv3x3", "conv1x1", "pool", "skip", "skips", "delete", "add", "shrink",
                     "grow", "improve"):
            child = edit_cell(parent, kind, float(rng.random()), rng)
            assert child != parent and all(op in OPS for op in child)
            if kind == "conv3x3":
                assert child.count("nor_conv_3x3") > parent.count("nor_conv_3x3") \
                    or parent.count("nor_conv_3x3") == 6
            if kind == "delete" and parent.count("none") < 6:
                assert child.count("none") > parent.count("none")
            if kind == "shrink" and any(cost[o] for o in parent):
                assert sum(cost[o] for o in child) < sum(cost[o] for o in parent)
            changed = sum(x != y for x, y in zip(parent, child, strict=True))
            if kind in ("skips", "shrink", "grow"):  # "multiple", "drastically": 2 or 3 edges
                assert 1 <= changed <= 3
            else:  # one edit, one edge (REA's step), at every temperature
                assert changed == 1, (kind, parent, child)
    a, b = ("none",) * 6, ("nor_conv_3x3",) * 6
    children = {crossover_cells(a, b, rng) for _ in range(50)}
    assert all(set(c) <= {"none", "nor_conv_3x3"} for c in children)
    assert a not in children and b not in children and len(children) > 10


def test_rules_mutator_edits_cells():
    from llmatic.llm.rules import RuleBasedMutator
    from llmatic.types import GenerationRequest

    parent = render_cell(SEED_CELL)
    gen = RuleBasedMutator(seed=0)
    requests = [GenerationRequest(prompt="", temperature=0.5, seed=i, parents=(parent,),
                                  instruction="Add residual connection to improve the above cell")
                for i in range(20)]
    for completion in gen.generate(requests):
        child = parse_cell(completion.text)
        assert child.count("skip_connect") >= 1 and child != SEED_CELL
    other = render_cell(("skip_connect",) * 6)
    cross = gen.generate([GenerationRequest(prompt="", temperature=0.5, seed=3,
                                            parents=(parent, other),
                                            instruction="Combine the above two cells")])[0]
    assert all(op in (a, b) for op, a, b in zip(parse_cell(cross.text), SEED_CELL,
                                                 ("skip_connect",) * 6, strict=True))


# ----------------------------------------------------------------------------- baselines
def _score(ops):
    """A smooth toy landscape: 3x3 convs are best, each edge weighted differently."""
    w = {"none": 0.0, "skip_connect": 0.2, "avg_pool_3x3": 0.1, "nor_conv_1x1": 0.5,
         "nor_conv_3x3": 1.0}
    return sum((i + 1) * w[op] for i, op in enumerate(ops)) / 21.0


def test_rea_keeps_its_population_and_beats_random_on_average():
    rea_best, random_best = [], []
    for seed in range(10):
        history = regularized_evolution(_score, 150, np.random.default_rng(seed),
                                        population=10, sample_size=3)
        assert len(history) == 150
        seen = [cell for cell, _ in history]
        for i in range(10, 150):  # every child is one edge away from an earlier cell
            assert any(sum(x != y for x, y in zip(seen[i], p, strict=True)) == 1
                       for p in seen[max(0, i - 10):i])
        rea_best.append(max(f for _, f in history))
        random_best.append(max(f for _, f in random_search(_score, 150,
                                                           np.random.default_rng(seed))))
    assert np.mean(rea_best) > np.mean(random_best)
    with pytest.raises(ValueError):
        regularized_evolution(_score, 10, np.random.default_rng(0), population=3, sample_size=4)


# ----------------------------------------------------------------- the search over a table
@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    from llmatic.nb201.table import write_synthetic_table

    path = tmp_path_factory.mktemp("nb201") / "nb201_synthetic.csv"
    write_synthetic_table(path, seed=0)
    return path


def test_nb201_search_finds_top_cells_and_reports_baselines(tmp_path, synthetic_csv):
    from llmatic.config import run_search
    from llmatic.nb201.table import load_table
    from llmatic.rundir import read_history

    cfg = compose_config("experiment=paper_nb201", f"nb201.table={synthetic_csv}",
                         "budget.generations=6", "budget.candidates_per_generation=100",
                         "seed=3")
    summary = run_search(cfg, tmp_path / "run", show_progress=False)
    nb = summary["nb201"]
    assert nb["budget"] == summary["candidates"] == 1 + 6 * 100
    assert [m["method"] for m in nb["methods"]] == ["llmatic", "random", "rea"]
    table = load_table(synthetic_csv, "cifar10")
    history = read_history(tmp_path / "run")
    ok = [r for r in history if r["status"] == Status.OK.value]
    assert len(ok) == len(history)  # the rules mutator always writes a readable cell
    # Fitness is the table's validation accuracy, and nothing else.
    for r in [r for r in ok if r.get("duplicate_of") is None][::50]:  # a repeat: its original's
        assert r["fitness"] == pytest.approx(table.lookup(r["arch"]).valid_accuracy / 100)
    llmatic = nb["methods"][0]
    best = max(ok, key=lambda r: r["fitness"])
    assert llmatic["arch"] == best["arch"]
    assert llmatic["test_accuracy"] == pytest.approx(table.lookup(best["arch"]).test_accuracy)
    assert llmatic["first_500"]["in_top_1_percent"]  # the bar (500 of 15,625)
    # The search improved on its seed cell by a wide margin.
    assert best["fitness"] > history[0]["fitness"] + 0.02
    # The test accuracy never reached the search: no record carries it.
    assert all("test" not in key for key in history[-1])
    assert json.loads((tmp_path / "run" / "nb201.json").read_text())["methods"] == nb["methods"]
    # Speed is measured in `make bench` (nb201_candidates_per_s), not here: a shared machine's
    # load decides wall times.
    assert nb["candidates_per_second_excluding_llm"] > 0, nb


def test_preset_mutates_fitter_elites_in_small_generations_and_the_papers_is_selectable(
        tmp_path, synthetic_csv):
    """experiment=paper_nb201: 200 x 10 candidates one at a time, parents the fittest of 20
    draws, repeats drawn again (measured in benchmarks/bench_search.py); the paper's 20 x 100
    generations, uniform draw and reused repeats are overrides."""
    from llmatic.config import run_search
    from llmatic.rundir import read_history

    base = ("experiment=paper_nb201", f"nb201.table={synthetic_csv}", "nb201.baselines=[]",
            "seed=2")
    cfg = compose_config(*base)
    assert (cfg.budget.generations, cfg.budget.candidates_per_generation) == (200, 10)
    assert cfg.parent_selection.tournament == 20
    assert (cfg.schedule, cfg.steady_lag, cfg.redraw_repeats) == ("steady", 0, 8)
    paper = compose_config(*base, "budget.generations=20", "budget.candidates_per_generation=100",
                           "parent_selection.tournament=1", "schedule=generational",
                           "redraw_repeats=0")
    assert paper.parent_selection.tournament == 1
    assert (paper.schedule, paper.redraw_repeats) == ("generational", 0)

    def parent_ranks(*overrides):
        """Per mutation after warm-up: the share of the archive's elites fitter than its parent
        (read from the history: each elite is the best record of its niche so far)."""
        run = tmp_path / "_".join(overrides)
        run_search(compose_config(*base, "budget.generations=15", *overrides), run,
                   show_progress=False)
        history = read_history(run)
        by_id = {r["candidate_id"]: r for r in history}
        ranks, elites = [], {}
        for gen in range(1, 16):
            snapshot = dict(elites)  # the archive this generation was planned from
            for r in (r for r in history if r["generation"] == gen):
                if r["operator"] == "mutation" and not r["warmup"] and len(snapshot) > 1:
                    parent = by_id[r["parents"][0]]["fitness"]
                    ranks.append(sum(e > parent for e in snapshot.values()) / len(snapshot))
            for r in (r for r in history if r["generation"] <= gen and r["added"]):
                niche = tuple(r["descriptors"].values())
                elites[niche] = max(elites.get(niche, 0.0), r["fitness"])
        return float(np.mean(ranks))

    assert parent_ranks() < 0.5 * parent_ranks("parent_selection.tournament=1")


def test_lookup_evaluator_looks_up_every_cell(synthetic_csv):
    from llmatic.nb201.evaluator import TableEvaluator
    from llmatic.nb201.table import load_table

    evaluator = TableEvaluator(load_table(synthetic_csv, "ImageNet16-120"))
    cells = list(all_archs())[:5000]
    results = [evaluator.evaluate(c) for c in cells]  # its speed: `make bench`
    assert all(r.status is Status.OK for r in results)
    assert results[0].val_accuracy < 0.02  # all-none: no path from input to output


def test_missing_table_fails_fast_naming_the_key(tmp_path):
    env = {**os.environ, "LLMATIC_CACHE_DIR": str(tmp_path / "cache")}
    for extra in ([], [f"nb201.table={tmp_path / 'nope.csv'}"]):
        proc = subprocess.run(
            [sys.executable, "-m", "llmatic", "experiment=paper_nb201", *extra,
             f"hydra.run.dir={tmp_path / 'run'}"],
            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "nb201.table" in proc.stderr and "llmatic-nb201" in proc.stderr
        assert not (tmp_path / "run" / "history.jsonl").exists()


def test_bad_nb201_values_are_config_errors(synthetic_csv):
    from llmatic.config import ConfigError, nb201_baselines, validate_config

    one = compose_config("experiment=paper_nb201", f"nb201.table={synthetic_csv}",
                         "nb201.baselines=rea")
    validate_config(one)
    assert nb201_baselines(one) == ["rea"]  # a bare name, not the letters r, e, a
    with pytest.raises(ConfigError, match="describe NAS-Bench-201 cells"):
        validate_config(compose_config("descriptors=nb201_ops"))

    for override, key in (("nb201.dataset=cifar1000", "nb201.dataset"),
                          ("nb201.seed_cell='|conv~0|'", "nb201.seed_cell"),
                          ("nb201.baselines=[random,bohb]", "nb201.baselines"),
                          ("nb201.rea.sample_size=20", "nb201.rea"),
                          ("fitness=loss", "fitness"),
                          ("descriptors=width_depth_flops", "descriptors.names"),
                          ("nb201.table=''", "nb201.table")):
        cfg = compose_config("experiment=paper_nb201", f"nb201.table={synthetic_csv}", override)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(cfg)


@pytest.mark.slow
def test_paper_nb201_sweep_from_the_command_line_then_report(tmp_path, synthetic_csv):
    """The issue's command: 3 datasets x 2 seeds, then the report (501 candidates each instead
    of 2,001: enough for the first-500 bar it checks; make test's time)."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "LLMATIC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "llmatic", "-m", "experiment=paper_nb201", "llm=rules",
         f"nb201.table={synthetic_csv}", "seed=0,1", "budget.generations=50",
         f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.rglob("nb201.json"))]
    assert len(results) == 6
    assert {(r["dataset"], r["seed"]) for r in results} == {
        (d, s) for d in ("cifar10", "cifar100", "ImageNet16-120") for s in (0, 1)}
    hits = [r["methods"][0]["first_500"]["in_top_1_percent"] for r in results]
    assert sum(hits) >= 4, hits  # "in most runs"

    report = subprocess.run([sys.executable, "-m", "llmatic.cli.nb201", "report", str(sweep)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    for label in ("LLMatic (this sweep)", "REA (this sweep)", "Random search (this sweep)",
                  "LLMatic (paper)", "94.26 ± 0.13", "Optimum (paper)", "47.31"):
        assert label in report.stdout, report.stdout
    table = json.loads((sweep / "nb201_table1.json").read_text())
    mine = table["rows"]["LLMatic (this sweep)"]
    for dataset in ("cifar10", "cifar100", "ImageNet16-120"):
        tests = [r["methods"][0]["test_accuracy"] for r in results if r["dataset"] == dataset]
        assert mine[dataset]["mean"] == pytest.approx(np.mean(tests))
        assert mine[dataset]["std"] == pytest.approx(np.std(tests, ddof=1))
        assert mine[dataset]["n"] == 2


def test_nb201_search_with_an_llm_server_reads_messy_answers(tmp_path, synthetic_csv):
    """llm=openai against a local OpenAI-compatible server answering like real chat models."""
    from openai_server import FakeOpenAIServer, cycling_responder

    from llmatic.config import run_search
    from llmatic.rundir import read_history

    good = ("nor_conv_3x3", "skip_connect", "nor_conv_3x3", "skip_connect", "nor_conv_1x1",
            "nor_conv_3x3")
    answers = [
        "Here is an improved cell with a skip connection:\n\n```python\n"
        + render_cell(good).replace("skip_connect(C)", "nn.Identity()", 1)
        + "```\n\nThe identity edge eases optimisation.",
        f"I suggest the architecture {arch_string(good)} for this dataset.",
        "```python\n" + render_cell(good).replace("nor_conv_1x1(C)", "sep_conv_5x5(C)") + "```",
        "I'm sorry, I can't modify neural networks.",
        "```python\nimport os\nos.system('echo pwned > " + str(tmp_path / "pwned") + "')\n"
        + render_cell(good) + "```",
    ]
    with FakeOpenAIServer(responder=cycling_responder(answers)) as server:
        cfg = compose_config("experiment=paper_nb201", f"nb201.table={synthetic_csv}",
                             "llm=openai", f"llm.base_url={server.base_url}",
                             "llm.model=fake-model", "llm.cache=false", "nb201.baselines=[]",
                             "budget.generations=2", "budget.candidates_per_generation=10",
                             "schedule=generational",  # one batched call per generation
                             "redraw_repeats=0")  # every answer read once, in order
        summary = run_search(cfg, tmp_path / "run", show_progress=False)
        requests = server.completion_requests
    history = read_history(tmp_path / "run")[1:]
    assert len(history) == 20
    # Requests run concurrently, so answers reach candidates in any order: count them.
    ok = [r for r in history if r["status"] == "ok"]
    assert len(ok) == 12 and all(r["arch"] == arch_string(good) for r in ok)  # 3 usable of 5
    bad_op = [r for r in history if r["error"] and "sep_conv_5x5" in r["error"]]
    refusals = [r for r in history if r["error"] and "no cell found" in r["error"]]
    assert len(bad_op) == len(refusals) == 4
    assert all(r["status"] == "invalid_cell" for r in bad_op + refusals)
    assert not (tmp_path / "pwned").exists()
    # What the LLM wrote is kept for the unreadable answers only.
    for r in history:
        assert (r["source_file"] is None) == (r["status"] == "ok")
    assert "sorry" in (tmp_path / "run" / refusals[0]["source_file"]).read_text()
    # The model saw the cell space described and the parent cell.
    text = json.dumps(requests[0])
    assert "NAS-Bench-201" in text and "self.edge_1_0" in text
    assert summary["nb201"]["methods"][0]["arch"] is not None


def test_nb201_resume_continues_exactly(tmp_path, synthetic_csv):
    from llmatic.config import run_search
    from llmatic.rundir import read_history

    base = ("experiment=paper_nb201", f"nb201.table={synthetic_csv}", "nb201.dataset=cifar100",
            "budget.candidates_per_generation=40")
    straight = run_search(compose_config(*base, "budget.generations=4"), tmp_path / "a",
                          show_progress=False)
    run_search(compose_config(*base, "budget.generations=2"), tmp_path / "b",
               show_progress=False)
    resumed = run_search(compose_config(*base, "budget.generations=4"), tmp_path / "b",
                         resume=True, show_progress=False)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "timings"} for r in records]

    assert strip(read_history(tmp_path / "a")) == strip(read_history(tmp_path / "b"))
    for key in ("budget", "methods", "optimum_test_accuracy"):
        assert straight["nb201"][key] == resumed["nb201"][key]


def _result(dataset, seed, test, table="nb201.csv", budget=2001, generator="rules"):
    return {"dataset": dataset, "table": f"/data/{table}", "seed": seed, "budget": budget,
            "optimum_test_accuracy": 94.37, "table_synthetic": False,
            "methods": [{"method": "llmatic", "generator": generator, "test_accuracy": test,
                         "first_500": {"in_top_1_percent": True}},
                        {"method": "rea", "test_accuracy": test - 1}]}


def test_report_groups_settings_and_skips_copies_and_unfinished_runs(tmp_path):
    from rich.console import Console

    from llmatic.nb201.report import ReportError, collect, main_report, table1

    def put(name, data):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "nb201.json").write_text(json.dumps(data))

    put("0", _result("cifar10", 0, 94.0))
    put("1", _result("cifar10", 1, 94.2))
    put("1_copy", _result("cifar10", 1, 94.2))  # the same run copied: counted once
    put("2", _result("cifar10", 0, 90.0, table="other.csv"))  # never averaged with the others
    (tmp_path / "3").mkdir()  # an unfinished run: named, left out
    (tmp_path / "3" / "config.yaml").write_text("space: nb201\nnb201:\n  table: x\n")
    console = Console(record=True, width=200)
    result = main_report(tmp_path, console)
    out = console.export_text()
    assert "counted once" in out and "have no nb201.json" in out and str(tmp_path / "3") in out
    rows = result["rows"]
    mine = rows["LLMatic (this sweep, nb201.csv)"]["cifar10"]
    assert mine["n"] == 2 and mine["mean"] == pytest.approx(94.1)
    assert mine["std"] == pytest.approx(np.std([94.0, 94.2], ddof=1))
    assert rows["LLMatic (this sweep, other.csv)"]["cifar10"]["n"] == 1
    assert rows["REA (this sweep, nb201.csv)"]["cifar10"]["mean"] == pytest.approx(93.1)
    assert "94.26 ± 0.13" in (tmp_path / "nb201_table1.md").read_text()
    assert len(collect(tmp_path / "0")) == 1  # one run directory works too
    assert table1([_result("cifar100", 0, 70.0)])["rows"]["LLMatic (this sweep)"]

    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "nb201.json").write_text("[]")
    with pytest.raises(ReportError, match="not an nb201 result"):
        collect(tmp_path)
    with pytest.raises(ReportError, match="no nb201.json"):
        collect(tmp_path / "3")


def test_table_path_is_saved_absolute_and_a_partial_table_must_hold_the_seed(
        tmp_path, synthetic_csv, monkeypatch):
    import shutil

    from omegaconf import OmegaConf

    from llmatic.config import ConfigError, run_search

    shutil.copy(synthetic_csv, tmp_path / "t.csv")
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("experiment=paper_nb201", "nb201.table=t.csv", "budget.generations=1",
                         "budget.candidates_per_generation=5", "nb201.baselines=[]")
    run_search(cfg, tmp_path / "run", show_progress=False)
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.nb201.table == str(tmp_path / "t.csv")  # resume works from any directory

    lines = (tmp_path / "t.csv").read_text().splitlines()
    (tmp_path / "part.csv").write_text("\n".join(lines[:3]) + "\n")  # comment, header, 1 row
    cfg = compose_config("experiment=paper_nb201", "nb201.table=part.csv")
    with pytest.raises(ConfigError, match="nb201.seed_cell=.* is not in the table"):
        run_search(cfg, tmp_path / "run2", show_progress=False)


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path,
                                                                        synthetic_csv):
    from llmatic.config import run_search
    from llmatic.rundir import read_history

    base = ("experiment=paper_nb201", f"nb201.table={synthetic_csv}", "budget.generations=2",
            "budget.candidates_per_generation=10", "nb201.baselines=[]")
    cfg = compose_config(*base)
    straight = run_search(cfg, tmp_path / "a", show_progress=False)
    # What a kill -9 during generation 0 leaves: the config and a partial history.
    run = tmp_path / "b"
    run.mkdir()
    (run / "config.yaml").write_text((tmp_path / "a" / "config.yaml").read_text())
    (run / "history.jsonl").write_text((tmp_path / "a" / "history.jsonl").read_text()
                                       .splitlines()[0][:50])
    resumed = run_search(compose_config(*base), run, resume=True, show_progress=False)
    assert resumed["candidates"] == straight["candidates"] == 21
    assert [r["arch"] for r in read_history(run)] == [r["arch"] for r in read_history(
        tmp_path / "a")]


def test_llmatic_final_points_nb201_runs_to_the_report(tmp_path, synthetic_csv, capsys):
    from llmatic.cli.final import main as final_main
    from llmatic.config import run_search

    cfg = compose_config("experiment=paper_nb201", f"nb201.table={synthetic_csv}",
                         "budget.generations=1", "budget.candidates_per_generation=5",
                         "nb201.baselines=[]")
    run_search(cfg, tmp_path / "run", show_progress=False)
    assert final_main([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "NAS-Bench-201" in err and "llmatic-nb201 report" in err


def test_pipelined_generations_are_deterministic_and_extend_exactly(tmp_path, synthetic_csv):
    """pipeline_generations=true: generation g+1 is planned before g is told (stale by one)."""
    from llmatic.config import run_search
    from llmatic.rundir import read_history

    base = ("experiment=paper_nb201", f"nb201.table={synthetic_csv}", "nb201.baselines=[]",
            "budget.candidates_per_generation=30", "schedule=generational",
            "pipeline_generations=true")

    def strip(run):
        return [{k: v for k, v in r.items() if k != "timings"} for r in read_history(run)]

    run_search(compose_config(*base, "budget.generations=5"), tmp_path / "a",
               show_progress=False)
    run_search(compose_config(*base, "budget.generations=5"), tmp_path / "b",
               show_progress=False)
    assert strip(tmp_path / "a") == strip(tmp_path / "b")
    # Extending a finished run continues with the plans it had already made.
    run_search(compose_config(*base, "budget.generations=2"), tmp_path / "c",
               show_progress=False)
    run_search(compose_config(*base, "budget.generations=5"), tmp_path / "c", resume=True,
               show_progress=False)
    assert strip(tmp_path / "c") == strip(tmp_path / "a")
    # Generation 2's parents were chosen before generation 1 was told: another search.
    run_search(compose_config(*base[:-1], "budget.generations=5"), tmp_path / "plain",
               show_progress=False)
    plain, piped = strip(tmp_path / "plain"), strip(tmp_path / "a")
    assert plain[:31] == piped[:31]  # the seed and generation 1 are the same
    assert plain[31:] != piped[31:]
    # Generation 2 was planned when only the seed (candidate 0) had been told.
    assert {p for r in piped[31:61] for p in r["parents"]} == {0}
    assert {p for r in plain[31:61] for p in r["parents"]} - {0}
