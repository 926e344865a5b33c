"""Skeleton/arena split: exact round trip, no copies, read-only shared memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loading.zerocopy import arena_nbytes, extract_tensors, replace_tensors_, tree_cloner
from tests.conftest import tiny_classifier


def _inputs(tokenizer):
    return tokenizer(
        ["a short text", "another, slightly longer text to classify"],
        padding=True,
        return_tensors="pt",
    )


def test_round_trip_is_bit_identical(tokenizer):
    model = tiny_classifier()
    skeleton, arena = extract_tensors(model)
    replace_tensors_(skeleton, arena)
    batch = _inputs(tokenizer)
    with torch.inference_mode():
        expected = model(**batch).logits
        actual = skeleton.module(**batch).logits
    assert torch.equal(expected, actual)


def test_extract_leaves_input_alone_and_skeleton_empty():
    model = tiny_classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    skeleton, arena = extract_tensors(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    leftover = [n for n, _ in skeleton.module.named_parameters()]
    assert leftover == [], "skeleton must carry no weights"
    tensors = [*model.parameters(), *model.buffers()]  # buffers include non-persistent ones
    assert arena_nbytes(skeleton) == sum(t.numel() * t.element_size() for t in tensors)
    assert arena.nbytes >= arena_nbytes(skeleton)


def test_rebuilt_tensors_view_the_arena():
    skeleton, arena = extract_tensors(tiny_classifier())
    replace_tensors_(skeleton, arena)
    lo, hi = arena.ctypes.data, arena.ctypes.data + arena.nbytes
    tensors = list(skeleton.module.parameters()) + list(skeleton.module.buffers())
    assert tensors
    for t in tensors:
        assert lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= hi
        assert not t.requires_grad
    # a change to the arena shows in the model: it is the same memory, not a copy
    weight = skeleton.module.classifier.weight
    spec = next(s for s in skeleton.specs if s.fqn == "classifier.weight")
    arena[spec.offset : spec.offset + 4] = np.frombuffer(np.float32(42.0).tobytes(), np.uint8)
    assert weight.flatten()[0].item() == 42.0


def test_bad_arena_is_refused():
    skeleton, arena = extract_tensors(tiny_classifier())
    with pytest.raises(TypeError, match="arena must be a 1-D uint8 array"):
        replace_tensors_(skeleton, arena.view(np.float32))


def test_protection_lasts_while_any_view_of_the_arena_lives():
    """Two arenas over the same memory (as two `ray.get`s return): dropping one keeps pages read-only."""
    import gc

    from loading import zerocopy

    skeleton, arena = extract_tensors(tiny_classifier())
    first, second = arena[:], arena[:]  # two arrays, same address and size
    skel_a, _ = extract_tensors(tiny_classifier())
    skel_b, _ = extract_tensors(tiny_classifier())
    replace_tensors_(skel_a, first, protect=True)
    replace_tensors_(skel_b, second, protect=True)
    key = (arena.ctypes.data, arena.nbytes)
    assert zerocopy._protected[key] == 2
    del skel_a, first
    gc.collect()
    assert zerocopy._protected[key] == 1, "the surviving model must stay protected"
    del skel_b, second
    gc.collect()
    assert key not in zerocopy._protected
    arena[-1] = 1  # writable again once nothing protects it


def test_clone_shares_tensors_but_not_module_state(tokenizer):
    skeleton, arena = extract_tensors(tiny_classifier())
    replace_tensors_(skeleton, arena)
    original = skeleton.module
    clone = tree_cloner(original)()
    pairs = list(zip(original.named_modules(), clone.named_modules(), strict=True))
    assert all(a_name == b_name and a is not b for (a_name, a), (b_name, b) in pairs)
    assert [t.data_ptr() for t in original.parameters()] == [t.data_ptr() for t in clone.parameters()]
    batch = _inputs(tokenizer)
    with torch.inference_mode():
        assert torch.equal(original(**batch).logits, clone(**batch).logits)
    clone.train()
    clone.register_forward_hook(lambda *_: None)
    clone.classifier.weight = None  # a slot emptied in the clone only
    assert not original.training and not original._forward_hooks
    assert original.classifier.weight is not None


def test_clone_keeps_a_module_registered_twice_as_one():
    shared = torch.nn.Linear(2, 2)
    clone = tree_cloner(torch.nn.Sequential(shared, torch.nn.ReLU(), shared))()
    assert clone[0] is clone[2] and clone[0] is not shared
    assert clone[0].weight is shared.weight


def test_populate_maps_shared_pages_without_changing_them(tmp_path):
    """Like the object store's: a shared-memory file mapped but not yet read. Populating it puts
    its pages in this process's page tables (RSS grows by the shared pages) and changes no byte."""
    import mmap
    import os

    import numpy as np
    import psutil

    from loading.zerocopy import populate_arena_

    size = 32 << 20
    path = f"/dev/shm/bertserve-test-{os.getpid()}"
    with open(path, "wb+") as f:
        f.truncate(size)
        f.write(b"\x07" * size)
        f.flush()
        mapping = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    os.unlink(path)
    arena = np.frombuffer(mapping, dtype=np.uint8)
    before = psutil.Process().memory_full_info().shared
    assert populate_arena_(arena) is True  # Linux >= 5.14
    assert psutil.Process().memory_full_info().shared - before > 0.9 * size
    assert int(arena[:: 1 << 20].sum()) == 7 * 32
