"""NAS-Bench-201 benchmark tables: the compact CSV, official files via nats_bench, the CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import nb201_official as official
import pytest

from llmatic.cli import nb201 as cli
from llmatic.nb201.arch import (
    EDGES,
    NUM_ARCHS,
    ArchStringError,
    all_archs,
    arch_string,
    parse_arch_string,
)
from llmatic.nb201.arch import canonical_strings as _canonical_strings
from llmatic.nb201.official import export_table
from llmatic.nb201.synthetic import write_synthetic_table
from llmatic.nb201.table import BenchmarkTable, load_table
from llmatic.nb201.tableformat import CSV_HEADER, DATASETS, Entry, TableError

HEADER = ",".join(CSV_HEADER) + "\n"
BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
CHANCE = {"cifar10": 10.0, "cifar100": 1.0, "ImageNet16-120": 100.0 / 120.0}
# input->output paths as edge positions: 0->3, 0->1->3, 0->2->3, 0->1->2->3
PATHS = [[EDGES.index(e) for e in path] for path in
         ([(3, 0)], [(1, 0), (3, 1)], [(2, 0), (3, 2)], [(1, 0), (2, 1), (3, 2)])]


def live_paths(ops):
    return [p for p in PATHS if all(ops[e] != "none" for e in p)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nb201") / "nb201_synthetic.csv"
    assert write_synthetic_table(path) == NUM_ARCHS * len(DATASETS)
    return path


@pytest.fixture(scope="module")
def tables(synthetic) -> dict[str, BenchmarkTable]:
    return {d: load_table(synthetic, d) for d in DATASETS}


@pytest.fixture(scope="module")
def official_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("official")
    return {"full": official.write_nats_full(folder), "fast": official.write_nats_fast(folder),
            "pth": official.write_nb201_pth(folder)}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def row(arch: str, dataset: str = "cifar10", *numbers: float) -> str:
    numbers = numbers or (90.0, 93.0, 100.0, 1.0)
    return ",".join([arch, dataset, *map(str, numbers)]) + "\n"


# ------------------------------------------------------------------------------ synthetic table


def test_canonical_strings_are_the_benchmark_arch_strings():
    canonical = _canonical_strings()
    assert len(canonical) == NUM_ARCHS
    assert all(arch_string(ops) == text for text, ops in canonical.items())


def test_synthetic_covers_every_cell_on_every_dataset(synthetic, tables):
    with open(synthetic, newline="") as handle:
        comment = handle.readline()
        rows = list(csv.reader(handle))
    # Marked as made-up in a comment line, which the loader reads as `synthetic`.
    assert comment.startswith("# SYNTHETIC") and "NOT benchmark data" in comment
    assert tuple(rows[0]) == CSV_HEADER
    assert len(rows) == 1 + NUM_ARCHS * len(DATASETS)
    pairs = {(r[0], r[1]) for r in rows[1:]}
    assert len(pairs) == NUM_ARCHS * len(DATASETS)
    for dataset, table in tables.items():
        assert table.synthetic
        assert table.complete and len(table) == NUM_ARCHS
        assert table.dataset == dataset and table.source == synthetic


def test_synthetic_is_deterministic_and_fast(synthetic, tmp_path):
    start = time.perf_counter()
    write_synthetic_table(tmp_path / "again.csv")
    assert time.perf_counter() - start < 2.0
    assert (tmp_path / "again.csv").read_bytes() == synthetic.read_bytes()
    write_synthetic_table(tmp_path / "seed1.csv", seed=1)
    assert (tmp_path / "seed1.csv").read_bytes() != synthetic.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_synthetic_disconnected_cells_are_at_chance(tables):
    for dataset, table in tables.items():
        chance = CHANCE[dataset]
        for ops, entry in table.items():
            if live_paths(ops):
                assert entry.valid_accuracy > chance + 10, (dataset, arch_string(ops))
            else:
                assert entry.valid_accuracy == pytest.approx(chance, abs=0.01)
                assert entry.test_accuracy == pytest.approx(chance, abs=0.01)


def test_synthetic_is_nb201_like(tables):
    ranges = {"cifar10": (91.6, 94.4), "cifar100": (73.5, 73.5),
              "ImageNet16-120": (46.7, 47.3)}
    for dataset, table in tables.items():
        arch, best = table.best_by_valid()
        ops = parse_arch_string(arch)
        # the best cell: every path is live, convs on all multi-edge paths, mostly 3x3 convs
        assert len(live_paths(ops)) == 4
        assert all(any(ops[e].startswith("nor_conv") for e in p) for p in PATHS[1:])
        assert ops.count("nor_conv_3x3") >= 4 and "avg_pool_3x3" not in ops
        valid_max, test_max = ranges[dataset]
        assert best.valid_accuracy == pytest.approx(valid_max, abs=1.0)
        assert table.optimum_test() == pytest.approx(test_max, abs=1.0)
        assert table.valid_percentile(best.valid_accuracy) == 0.0
        # more and bigger convs are better; test follows valid
        all_conv3 = table.lookup(("nor_conv_3x3",) * 6)
        all_conv1 = table.lookup(("nor_conv_1x1",) * 6)
        all_pool = table.lookup(("avg_pool_3x3",) * 6)
        all_skip = table.lookup(("skip_connect",) * 6)
        assert (all_conv3.valid_accuracy > all_conv1.valid_accuracy > all_pool.valid_accuracy
                > all_skip.valid_accuracy)
        assert table.lookup(BEST).valid_accuracy > all_conv3.valid_accuracy - 0.5
        assert abs(all_conv3.test_accuracy - all_conv3.valid_accuracy) < 4.0
    c10 = tables["cifar10"]
    flops = [e.flops for _, e in c10.items()]
    params = [e.params for _, e in c10.items()]
    assert min(flops) == pytest.approx(7.78, abs=0.1) and max(flops) == pytest.approx(220.1, 0.01)
    assert min(params) == pytest.approx(0.073, abs=0.01)
    assert max(params) == pytest.approx(1.53, abs=0.01)
    in16 = tables["ImageNet16-120"].lookup(("nor_conv_3x3",) * 6)
    assert in16.flops == pytest.approx(55.0, abs=0.5)


# ------------------------------------------------------------------------------ the table API


def test_lookup_accepts_ops_and_arch_strings(tables):
    table = tables["cifar10"]
    ops = parse_arch_string(BEST)
    entry = table.lookup(ops)
    assert isinstance(entry, Entry)
    assert table.lookup(BEST) is entry
    assert table.lookup(list(ops)) is entry
    assert table.lookup(f"  {BEST}\n") is entry  # parsed, not only the canonical spelling
    reordered = ("|nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|"
                 "+|nor_conv_3x3~2|skip_connect~0|nor_conv_3x3~1|")
    assert table.lookup(reordered) is entry
    with pytest.raises(ArchStringError):
        table.lookup("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ArchStringError):
        table.lookup(("nor_conv_3x3",) * 5)
    with pytest.raises(ArchStringError):
        table.lookup(("bogus",) * 6)


def test_partial_table(tmp_path):
    archs = [("nor_conv_3x3",) * 6, ("nor_conv_1x1",) * 6, ("skip_connect",) * 6,
             ("avg_pool_3x3",) * 6]
    text = HEADER + "".join(row(arch_string(a), "cifar10", 90.0 - i, 93.0 - i, 10.0, 0.1)
                            for i, a in enumerate(archs))
    text += row(arch_string(archs[3]), "cifar10", 87.0, 95.0, 10.0, 0.1).replace(
        "cifar10", "cifar100")
    table = load_table(write(tmp_path / "t.csv", text), "cifar10")
    assert len(table) == 4 and not table.complete
    assert table.lookup(("none",) * 6) is None
    assert table.lookup(arch_string(("none",) * 6)) is None
    assert table.best_by_valid() == (arch_string(archs[0]), Entry(90.0, 93.0, 10.0, 0.1))
    assert table.optimum_test() == 93.0
    assert [table.valid_percentile(v) for v in (90.0, 89.0, 88.0, 87.0)] == [0, .25, .5, .75]
    assert table.valid_percentile(95.0) == 0.0 and table.valid_percentile(1.0) == 1.0
    assert "cells=4" in repr(table)


def test_lookups_and_loading_are_fast(synthetic, tables):
    table = tables["cifar100"]
    cells = list(all_archs())
    texts = [arch_string(ops) for ops in cells]
    start = time.perf_counter()
    for ops, text in zip(cells, texts, strict=True):
        table.lookup(ops)
        table.lookup(text)
    rate = 2 * len(cells) / (time.perf_counter() - start)
    assert rate > 100_000, f"{rate:.0f} lookups/s"
    best = min(_timed(load_table, synthetic, "ImageNet16-120") for _ in range(2))
    assert best < 1.0, f"loading the full CSV took {best:.2f} s"


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------ CSV errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("arch,dataset,valid,test,flops,params\n", "line 1: expected the header"),
        (HEADER.replace("params", "params,extra"), "line 1: expected the header"),
        (HEADER + row(BEST) + BEST + ",cifar10,90,93\n", "line 3: expected 6 fields"),
        (HEADER + row(BEST) + row("|nor_conv_3x3~0|+|none~0|", "cifar10"), "line 3: bad arch"),
        (HEADER + row(BEST, "cifar10", 90.0, "high", 1.0, 1.0), "line 2: test_accuracy must be"),
        (HEADER + row(BEST, "cifar10", 190.0, 93.0, 1.0, 1.0), "line 2: valid_accuracy must be"),
        (HEADER + row(BEST, "cifar10", 90.0, 93.0, "nan", 1.0), "line 2: flops must be"),
        (HEADER + row(BEST, "cifar10", 90.0, 93.0, 1.0, -1.0), "line 2: params must be"),
        (HEADER + row(BEST) + row(BEST, "CIFAR-10"), "line 3: unknown dataset 'CIFAR-10'"),
        (HEADER + row(BEST) + row(BEST, "cifar100") + row(f" {BEST} "),
         "line 4: duplicate row for cifar10"),
    ],
)
def test_csv_errors_name_the_line(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(TableError) as info:
        load_table(path, "cifar10")
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_duplicate_error_gives_the_first_line(tmp_path):
    path = write(tmp_path / "dup.csv", HEADER + row(BEST) + row(BEST, "cifar100") + row(BEST))
    with pytest.raises(TableError, match=r"line 4: duplicate .*first at line 2"):
        load_table(path, "cifar10")


def test_comment_lines_before_the_header_count_in_line_numbers(tmp_path):
    path = write(tmp_path / "c.csv", "# exported by me\n# second note\n" + HEADER + row(BEST)
                 + row(BEST))
    with pytest.raises(TableError, match=r"line 5: duplicate .*first at line 4"):
        load_table(path, "cifar10")
    table = load_table(write(tmp_path / "ok.csv", "# notes\n" + HEADER + row(BEST)), "cifar10")
    assert len(table) == 1 and not table.synthetic


def test_missing_dataset_lists_the_datasets_the_file_has(tmp_path):
    path = write(tmp_path / "c10.csv", HEADER + row(BEST) + row(arch_string(("none",) * 6)))
    with pytest.raises(TableError) as info:
        load_table(path, "ImageNet16-120")
    assert "no rows for dataset 'ImageNet16-120'" in str(info.value)
    assert "cifar10 (2 cells)" in str(info.value)
    with pytest.raises(TableError, match="has no rows for dataset .* it has no rows"):
        load_table(write(tmp_path / "empty.csv", HEADER), "cifar10")


def test_unknown_dataset_argument(synthetic):
    with pytest.raises(TableError, match=r"unknown dataset 'cifar-10'; choose from"):
        load_table(synthetic, "cifar-10")


def test_missing_file_says_where_to_get_the_table(tmp_path):
    with pytest.raises(TableError) as info:
        load_table(tmp_path / "nb201.csv", "cifar10")
    message = str(info.value)
    for part in ("nb201.table", "does not exist", "https://github.com/D-X-Y/NATS-Bench",
                 "NATS-tss-v1_0-3ffb9-simple.tar", "https://github.com/D-X-Y/NAS-Bench-201",
                 "llmatic-nb201 export PATH --out nb201.csv",
                 "llmatic-nb201 synthetic --out nb201_synthetic.csv"):
        assert part in message


def test_unknown_formats(tmp_path):
    with pytest.raises(TableError, match="unknown table format"):
        load_table(write(tmp_path / "table.txt", HEADER), "cifar10")
    with pytest.raises(TableError, match="extract it first"):
        load_table(write(tmp_path / "NATS-tss-v1_0-3ffb9-simple.tar", "x"), "cifar10")
    (tmp_path / "folder").mkdir()
    with pytest.raises(TableError, match="directory without meta.pickle.pbz2"):
        load_table(tmp_path / "folder", "cifar10")
    with pytest.raises(TableError, match="cannot read it as a NATS-Bench"):
        load_table(write(tmp_path / "broken.pickle.pbz2", "not bz2"), "cifar10")


# ------------------------------------------------------------------------------ official files


def assert_protocol(table: BenchmarkTable, dataset: str) -> None:
    assert len(table) == len(official.CELLS)
    for cell, text in enumerate(official.CELLS):
        entry = table.lookup(text)
        want = official.expected(cell, dataset)
        assert entry.valid_accuracy == pytest.approx(want["valid_accuracy"])
        assert entry.test_accuracy == pytest.approx(want["test_accuracy"])
        assert entry.flops == pytest.approx(want["flops"])
        assert entry.params == pytest.approx(want["params"])


@pytest.mark.parametrize("kind", ["full", "fast", "pth"])
def test_official_file_loads_by_the_protocol(official_files, kind):
    tables = {d: load_table(official_files[kind], d) for d in DATASETS}
    for dataset, table in tables.items():
        assert_protocol(table, dataset)
        assert table.source == official_files[kind]
    # spelled out for cell 1 (seeds 777 and 888 average to +0.25): cifar10 searches on
    # cifar10-valid's x-valid and reports cifar10's ori-test; the others x-valid / x-test
    c10 = tables["cifar10"].lookup(official.CELLS[1])
    assert (c10.valid_accuracy, c10.test_accuracy) == (81.25, 91.25)
    c100 = tables["cifar100"].lookup(official.CELLS[1])
    assert (c100.valid_accuracy, c100.test_accuracy) == (61.25, 62.25)


def test_protocol_is_the_apis_own(official_files):
    import nats_bench
    from nats_bench.api_utils import remap_dataset_set_names

    api = nats_bench.create(str(official_files["full"]), "tss", fast_mode=False, verbose=False)
    for dataset in DATASETS:
        table = load_table(official_files["full"], dataset)
        for text in official.CELLS:
            index = api.query_index_by_arch(text)
            entry = table.lookup(text)
            results = api.query_meta_info_by_index(index, hp="200")
            for column, setname in (("valid_accuracy", "valid"), ("test_accuracy", "test")):
                name, metric_set = remap_dataset_set_names(dataset, setname)
                metrics = results.get_metrics(name, metric_set, is_random=False)
                assert getattr(entry, column) == metrics["accuracy"], (dataset, column)
            cost = api.get_cost_info(index, dataset, hp="200")
            assert (entry.flops, entry.params) == (cost["flops"], cost["params"])


def test_export_then_load_matches_direct_load(official_files, tmp_path):
    out = tmp_path / "sub" / "nb201.csv"
    rows = export_table(official_files["full"], out, progress=False)
    assert rows == len(official.CELLS) * len(DATASETS)
    for dataset in DATASETS:
        exported = load_table(out, dataset)
        assert_protocol(exported, dataset)
        direct = load_table(official_files["fast"], dataset)
        assert dict(exported.items()) == dict(direct.items())  # exact: repr() round-trips
    assert export_table(official_files["pth"], out, datasets=["cifar100"], progress=False) == 4
    with pytest.raises(TableError, match="no rows for dataset 'cifar10'"):
        load_table(out, "cifar10")


def test_export_errors(tmp_path, official_files):
    with pytest.raises(TableError, match="does not exist.*NATS-Bench"):
        export_table(tmp_path / "missing.pickle.pbz2", tmp_path / "out.csv")
    with pytest.raises(TableError, match="unknown dataset"):
        export_table(official_files["full"], tmp_path / "out.csv", datasets=["cifar-10"])
    # a size-space (sss) file: its "arch strings" are channel lists
    sss = tmp_path / "sss"
    sss.mkdir()
    official._pickle_bz2({"meta_archs": ["8:16:24:32:40"]}, sss / "meta.pickle.pbz2")
    with pytest.raises(TableError, match="not a NAS-Bench-201 topology cell"):
        export_table(sss, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


# ------------------------------------------------------------------------------ CLI


def test_console_script_writes_a_synthetic_table(tmp_path):
    script = Path(sys.executable).parent / "llmatic-nb201"
    assert script.exists(), "pip install -e . installs the llmatic-nb201 console script"
    out = tmp_path / "nb201_synthetic.csv"
    done = subprocess.run([str(script), "synthetic", "--out", str(out)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "SYNTHETIC" in done.stdout
    assert load_table(out, "cifar100").complete
    help_text = subprocess.run([str(script), "synthetic", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    assert "SYNTHETIC" in help_text and "NOT" in help_text


def test_main_synthetic_and_export(tmp_path, official_files, capsys, synthetic):
    out = tmp_path / "s.csv"
    assert cli.main(["synthetic", "--out", str(out), "--seed", "0"]) == 0
    assert out.read_bytes() == synthetic.read_bytes()
    exported = tmp_path / "e.csv"
    assert cli.main(["export", str(official_files["fast"]), "--out", str(exported),
                     "--datasets", "cifar10", "ImageNet16-120"]) == 0
    captured = capsys.readouterr()
    assert "wrote 8 rows" in captured.out and "read 4/4 cells" in captured.err
    assert_protocol(load_table(exported, "ImageNet16-120"), "ImageNet16-120")


def test_main_errors_exit_2_with_one_line(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmatic-nb201: error:") and err.count("\n") == 1
    assert "https://github.com/D-X-Y/NATS-Bench" in err
    assert cli.main(["export", str(tmp_path), "--out", str(tmp_path / "x.csv"),
                     "--datasets", "mnist"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["synthetic"]) == 2  # --out is required
    capsys.readouterr()


def test_every_subcommand_has_a_handler():
    parser = cli.build_parser()
    assert set(parser.subparsers.choices) == set(cli.COMMANDS) == {"export", "synthetic",
                                                                   "report"}
