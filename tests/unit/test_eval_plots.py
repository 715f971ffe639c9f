import pytest

from rprm_ray.evaluation import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return data.startswith(PNG_MAGIC) and len(data) > 5000


def test_each_plot_writes_a_png(tmp_path):
    outs = [
        plots.plot_f1_vs_k([1, 2, 4], {"gsm8k": [50.0, 60.0, 65.0]}, tmp_path / "k.png"),
        plots.plot_accuracy_vs_n([1, 2, 4, 8], {"min": [60, 65, 70, 72], "majority": [60, 60, 68, 71]},
                                 tmp_path / "sub" / "n.png"),
        plots.plot_accuracy_per_iteration([0, 1, 2], {"pass@1": [40.0, 45.5, 47.0]}, tmp_path / "it.png"),
        plots.plot_judge_f1_per_phase(["SFT", "DPO"], [57.3, 70.4], tmp_path / "phase.png"),
    ]
    assert outs[1] == tmp_path / "sub" / "n.png"
    assert all(_is_png(p) for p in outs)


def test_bad_series_rejected(tmp_path):
    with pytest.raises(ValueError, match="series 'min' has 2 x values and 1 y values"):
        plots.plot_accuracy_vs_n([1, 2], {"min": [50.0]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_f1_vs_k([1], {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 phases and 1 values"):
        plots.plot_judge_f1_per_phase(["a", "b"], [1.0], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
