"""examples/quickstart.ipynb runs, every cell, on a real Jupyter kernel (nbclient, ipykernel)."""

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"


def outputs(cell) -> tuple[str, str]:
    """A code cell's printed text and its HTML display."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    html = "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)
    return text, html


def test_the_quickstart_runs_on_a_kernel_and_shows_what_it_says(tmp_path, monkeypatch):
    monkeypatch.setenv("LINE_CACHE_DIR", str(tmp_path / "cache"))  # the kernel inherits the environment
    monkeypatch.setenv("LINE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on a failing cell
    cells = [outputs(c) for c in notebook.cells if c.cell_type == "code"]
    (_, _), (scored, score_html), (_, run_html), (_, table_html), (labelled, label_html), (asked, _) = cells
    auc = float(re.search(r"AUC (\d\.\d+)", scored).group(1))
    assert 0 <= auc <= 1 and score_html.count('<img src="data:image/jpeg;base64,') == 3
    assert score_html.count('<img class="overlay" src="data:image/jpeg;base64,') == 3  # a conv layer: where it fires
    assert "where the unit fires" in label_html
    assert run_html.count('<tr data-unit="') == 2 and "<table" in table_html
    assert "How the label was chosen" in label_html and labelled.split(" AUC")[0] in label_html
    assert "score_concept({'concept': 'red stripes'}) -> 'red stripes' on unit 17: AUC" in asked
    assert len(list((tmp_path / "runs").iterdir())) == 2  # the labelling run and the chat thread
