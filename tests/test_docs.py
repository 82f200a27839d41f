"""The pages whose numbers come from committed results: docs/performance.md
(GPT-2 Medium), docs/performance-llama.md (Llama-small),
docs/performance-half.md (GPT-2 Medium in float16 and bfloat16),
docs/performance-llama-half.md (Llama-small in float16), docs/targets.md
(issue 41's targets) and docs/workloads.md (256 new tokens, a batch) are
``python -m benchmarks report`` of docs/results/*/results.json, byte for
byte; the README's targets table is the one its report renders, its parts
table the registry's and its compatibility table the harness's stacks."""

import pathlib

import pytest

from benchmarks import environments, report

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = {
    "gpt2_medium": ROOT / "docs" / "performance.md",
    "llama_small": ROOT / "docs" / "performance-llama.md",
    "gpt2_medium_half": ROOT / "docs" / "performance-half.md",
    "llama_small_half": ROOT / "docs" / "performance-llama-half.md",
    "targets_gpt2_medium": ROOT / "docs" / "targets.md",
    "workloads_gpt2_medium": ROOT / "docs" / "workloads.md",
}


@pytest.mark.parametrize("model", sorted(PAGES))
def test_performance_page_is_the_committed_results_rendered(model, tmp_path):
    page = PAGES[model]
    results = ROOT / "docs" / "results" / model / "results.json"
    rendered = report.render(results, tmp_path / page.name, False)
    assert rendered.read_text() == page.read_text(), (
        "regenerate it: python -m benchmarks report "
        f"docs/results/{model}/results.json --out docs/{page.name} "
        "--no-charts"
    )


# The README shows one run's targets table, the others link their pages.
README_TABLES = ("targets_gpt2_medium",)


@pytest.mark.parametrize("model", README_TABLES)
def test_readme_targets_table_is_the_rendered_one(model):
    page = PAGES[model].read_text()
    heading = "### Targets: Keras + fix over openvino-genai"
    table = page.split(heading)[1].split("\n\n")[2]
    assert table.startswith("| Keras row |")
    assert table in (ROOT / "README.md").read_text()


def test_readme_parts_table_is_the_registrys():
    from keras_ov_einsum.core.registry import markdown_table

    assert markdown_table() in (ROOT / "README.md").read_text(), (
        "paste it in: python -c 'from keras_ov_einsum.core.registry import "
        "markdown_table; print(markdown_table())'"
    )


def test_readme_compatibility_table_is_the_stacks():
    """benchmarks/environments.py's stacks, their pins read from the files
    run.sh installs them from."""
    table = environments.compatibility_table()
    assert table in (ROOT / "README.md").read_text(), (
        "paste environments.compatibility_table() into README's "
        "Compatibility section"
    )
