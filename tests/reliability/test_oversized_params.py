"""Item 16 of the trust issue: a param longer than MLflow's 6,000 characters is cut visibly, never silently."""

from __future__ import annotations

import nbmlops
from tests.conftest import runs_of


def test_an_oversized_param_is_cut_with_a_tag_a_warning_and_the_whole_value_as_an_artifact(
    shell, client, request, capfd, tmp_path
):
    long_text = "word " * 3000  # 15,000 characters
    shell.run_cell(f"vocabulary = {long_text!r}", store_history=True)
    shell.run_cell_magic("track", "--params vocabulary", "size = float(len(vocabulary))")
    nbmlops.flush(60)
    (run,) = runs_of(client, request.node.name)
    stored = run.data.params["vocabulary"]
    assert len(stored) == 6000 and stored.endswith("...")
    assert run.data.tags["nbmlops.truncated_params"] == "vocabulary"
    whole = client.download_artifacts(run.info.run_id, "params/vocabulary.txt", str(tmp_path))
    assert open(whole).read() == long_text
    err = capfd.readouterr().err
    assert err.count("longer than 6,000 characters were cut") == 1 and "params/<name>.txt" in err
