"""The pages whose numbers come from committed results: docs/performance.md
is ``python -m benchmarks report`` of docs/results/*/results.json, byte for
byte, and the README's targets table is the one that report renders."""

import pathlib

from benchmarks import report

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "gpt2_medium" / "results.json"
PAGE = ROOT / "docs" / "performance.md"


def test_performance_page_is_the_committed_results_rendered(tmp_path):
    rendered = report.render(RESULTS, tmp_path / "performance.md", False)
    assert rendered.read_text() == PAGE.read_text(), (
        "regenerate it: python -m benchmarks report "
        "docs/results/gpt2_medium/results.json --out docs/performance.md "
        "--no-charts"
    )


def test_readme_targets_table_is_the_rendered_one():
    page = PAGE.read_text()
    heading = "### Targets: Keras + fix over openvino-genai"
    table = page.split(heading)[1].split("\n\n")[2]
    assert table.startswith("| Keras row |")
    assert table in (ROOT / "README.md").read_text()
