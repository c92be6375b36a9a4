"""`elmlab worker` as a training worker needs it: one run per process, GPUs taken from the inherited mask."""

from __future__ import annotations

import pytest

from elmlab.cli import main
from elmlab.commands.queue import gpu_masks, gpu_worker_commands


def test_a_thread_pool_of_runs_is_not_offered(capsys, elmlab_home):
    # several runs in one process would share its seed, precision flags and buffer pool
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--pool", "threads", "--concurrency", "2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--pool" in err and "prefork" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("n", "inherited", "masks"),
    [
        (2, None, ["0", "1"]),
        (2, "2,3", ["2", "3"]),
        (1, "5, 7", ["5"]),
        (2, "GPU-aaaa,GPU-bbbb", ["GPU-aaaa", "GPU-bbbb"]),
    ],
)
def test_gpu_workers_stay_on_the_gpus_this_process_was_given(n, inherited, masks):
    assert gpu_masks(n, inherited) == masks
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in gpu_worker_commands(n, "train", 1, inherited)] == masks


@pytest.mark.parametrize("inherited", ["2", ""])
def test_more_gpus_than_the_mask_allows_is_a_clear_error(inherited):
    with pytest.raises(ValueError, match="GPU"):
        gpu_masks(2, inherited)
