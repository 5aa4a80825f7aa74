"""The search's mechanisms measured by their effect (docs/method.md §3.4, §3.5, §3.8).

Most searches here run in the NAS-Bench-201 space on the bundled synthetic table: the same
planning, prompt archive, temperature and telling code as a network search, at lookup cost.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compose_config

from llmatic.config import build_search, run_search
from llmatic.nb201.arch import canonical_key, parse_arch_string
from llmatic.qd import PromptArchive
from llmatic.rundir import read_history
from llmatic.search import Plan, source_key
from llmatic.types import EvalResult, Operator, Status


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from llmatic.nb201.table import write_synthetic_table

    path = tmp_path_factory.mktemp("nb201") / "nb201_synthetic.csv"
    write_synthetic_table(path, seed=0)
    return path


def _nb201(table, run_dir, *overrides):
    cfg = compose_config("experiment=paper_nb201", f"nb201.table={table}",
                         "budget.generations=4", "budget.candidates_per_generation=50",
                         *overrides)
    run_search(cfg, run_dir, show_progress=False)
    _nb201.instructions = len(cfg.operators.mutation_instructions)
    return [r for r in read_history(run_dir) if r["operator"] == "mutation" and not r["warmup"]]


def test_adaptive_temperature_reaches_the_mutations_and_constant_stays_put(table, tmp_path):
    adaptive = _nb201(table, tmp_path / "adaptive")
    constant = _nb201(table, tmp_path / "constant", "temperature=constant")
    # Before: a selected prompt kept its stored temperature, and mutations after warm-up
    # used 3 temperatures; now the adapted temperature creates the cell selection picks.
    assert len({r["temperature"] for r in adaptive}) >= 8
    assert {r["temperature"] for r in constant} == {0.6}


def test_selection_keeps_every_instruction_in_play(table, tmp_path):
    mutations = _nb201(table, tmp_path / "run")
    k = _nb201.instructions
    counts = np.bincount([r["instruction_id"] for r in mutations], minlength=k)
    # Before: top-3 selection locked onto 3 prompts and most instructions went unused.
    assert (counts > 0).all(), counts
    p = counts / counts.sum()
    assert -(p[p > 0] * np.log(p[p > 0])).sum() / np.log(k) >= 0.7


def test_select_with_explore_draws_every_instruction_even_against_curiosity():
    archive = PromptArchive(num_instructions=5, t_min=0.1, t_max=1.0, t_step=0.05)
    archive.credit(0, 0.6, 50.0, True)  # one overwhelming cell
    rng = np.random.default_rng(0)
    greedy = {archive.select(rng, strategy="softmax", explore=0.0)[0] for _ in range(200)}
    explored = [archive.select(rng, strategy="softmax", explore=0.2) for _ in range(2000)]
    assert greedy == {0}
    assert {i for i, _ in explored} == set(range(5))
    assert len({t for _, t in explored}) == archive.bins == 19


def test_instruction_level_selection_does_not_reward_cell_count():
    # Instruction 0 has spread into 12 temperature cells, instruction 1 has one, all at the
    # same curiosity: drawn over cells, 0 wins 12 of 13 draws only for being used more.
    archive = PromptArchive(num_instructions=2, t_min=0.1, t_max=1.0, t_step=0.05)
    for t in np.linspace(0.1, 0.65, 12):
        archive.offer(0, float(t))
    archive.offer(1, 0.6)
    rng = np.random.default_rng(0)

    def share(level, n=2000):
        return np.mean([archive.select(rng, level=level, tau=2.0)[0] == 0 for _ in range(n)])

    assert share("cell") > 0.88
    assert 0.45 < share("instruction") < 0.55
    # curiosity still biases the instruction draw, and the temperature within it
    archive.credit(1, 0.6, 2.0, True)
    assert share("instruction") < 0.3  # exp(-1) / (1 + exp(-1)) = 0.27
    archive.credit(0, 0.1, 4.0, True)
    picks = [archive.select(rng, level="instruction", tau=2.0) for _ in range(2000)]
    zero = [t for i, t in picks if i == 0]
    assert np.mean(np.isclose(zero, 0.1)) > 0.33  # 1 hot cell of 12: e^2 / (e^2 + 11) = 0.40


def test_a_cell_never_holds_two_instructions():
    archive = PromptArchive(num_instructions=13, t_min=0.1, t_max=1.0, t_step=0.05)
    for i in range(13):
        for t in archive.temperatures():
            archive.credit(i, float(t), 1.0 + i, False)
    data = archive.archive.data()
    assert len(data["index"]) == 13 * 19
    pairs = {(int(s[0]), round(float(s[1]), 6)) for s in data["solution"]}
    assert len(pairs) == 13 * 19
    # each cell kept its own instruction's curiosity
    assert sorted(set(data["objective"].tolist())) == [float(1 + i) for i in range(13)]


def test_spread_inherits_curiosity_and_never_overwrites():
    archive = PromptArchive(num_instructions=3, t_min=0.1, t_max=1.0, t_step=0.05)
    archive.credit(1, 0.6, 2.0, True)
    assert archive.spread(1, 0.6, 0.65)
    assert archive.get(1, 0.65)["objective"] == 2.0
    archive.credit(1, 0.65, -3.0, False)
    assert not archive.spread(1, 0.6, 0.65)
    assert archive.get(1, 0.65)["objective"] == -1.0


@pytest.mark.parametrize("status", [Status.LLM_ERROR, Status.NO_NETWORK, Status.FORBIDDEN])
def test_a_completion_without_a_network_lowers_its_prompts_curiosity(table, tmp_path, status):
    cfg = compose_config("experiment=paper_nb201", f"nb201.table={table}",
                         "curiosity.no_network=-0.75")
    search = build_search(cfg, tmp_path)
    try:
        state = search.new_state()
        state.prompt_archive.credit(4, 0.6, 1.0, True)
        parent = {"objective": 0.5, "candidate_id": 0}
        plan = Plan(1, Operator.MUTATION, search.instructions[4], 4, 0.6, [parent], False)
        record = search.tell(state, plan, EvalResult(status, error="refused"), None, 1)
    finally:
        search.close()
    # Before: a refusal changed neither curiosity nor temperature.
    assert state.prompt_archive.get(4, 0.6)["objective"] == pytest.approx(0.25)
    assert record["next_temperature"] == pytest.approx(0.55)


def test_source_key_ignores_comments_docstrings_and_layout():
    a = "import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x\n"
    b = ('"""A network."""\nimport torch\n\n\nclass Net( torch.nn.Module ):  # hi\n'
         '    """Doc."""\n    def forward(self, x):\n        # identity\n        return (x)\n')
    c = a.replace("return x", "return x + 1")
    assert source_key(a) == source_key(b) != source_key(c)


def test_repeated_networks_are_not_queried_again(table, tmp_path):
    _nb201(table, tmp_path / "run")
    history = read_history(tmp_path / "run")
    by_id = {r["candidate_id"]: r for r in history}
    dups = [r for r in history if r.get("duplicate_of") is not None]
    assert dups, "the rules mutator repeats cells; each repeat must be marked"
    def network(rec):  # isomorphic cells are one network (nb201.arch.canonical_key)
        return canonical_key(parse_arch_string(rec["arch"]))

    for rec in dups:
        first = by_id[rec["duplicate_of"]]
        assert network(rec) == network(first) and rec["fitness"] == first["fitness"]
        assert first.get("duplicate_of") is None and first["candidate_id"] < rec["candidate_id"]
    networks = [network(r) for r in history if r.get("duplicate_of") is None and r["arch"]]
    assert len(networks) == len(set(networks))  # every distinct network was looked up once


def test_parent_tournament_mutates_fitter_elites_and_one_is_the_papers_uniform_draw():
    from llmatic.qd import NetworkArchive
    from llmatic.search import select_parent

    archive = NetworkArchive(kind="grid", dims=(4, 4))
    for i in range(16):  # one elite per cell, fitness i / 15
        archive.add(source=f"net{i}", fitness=i / 15, measures=[(i % 4 + 0.5) / 4,
                    (i // 4 + 0.5) / 4], raw_measures=[0.0, 0.0], candidate_id=i,
                    generation=1, val_accuracy=i / 15, val_loss=1.0, params=1, flops=1)

    def mean_fitness(k, n=3000):
        rng = np.random.default_rng(0)
        return np.mean([float(select_parent(archive, rng, k)["objective"]) for _ in range(n)])

    for s in range(5):  # tournament 1 is the paper's draw, rng for rng
        assert (select_parent(archive, np.random.default_rng(s), 1)["candidate_id"]
                == archive.sample(np.random.default_rng(s))["candidate_id"])
    assert abs(mean_fitness(1) - 0.5) < 0.03
    assert mean_fitness(2) > 0.6  # E[max of 2 uniform draws of 16] = 0.66
    picks = {select_parent(archive, np.random.default_rng(s), 2)["candidate_id"]
             for s in range(400)}
    assert len(picks) >= 14  # every elite but the weakest keeps a chance
