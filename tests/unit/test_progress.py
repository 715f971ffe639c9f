from rprm_ray.progress import progress_bar


def test_off_a_terminal_the_bar_redraws_rarely() -> None:
    # pytest captures stderr: a pipe, as in a Ray actor's forwarded log.
    with progress_bar(10, "work", unit="step") as bar:
        assert bar.mininterval == 15.0 and bar.unit == "step" and not bar.disable
    with progress_bar(10, "work", enabled=False) as bar:
        assert bar.disable
