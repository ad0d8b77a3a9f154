import numpy as np
from PIL import Image

from tools.cache import DiskCache, content_key


def test_keys_are_stable_and_distinct():
    assert content_key("image", "gen", "red", 0) == content_key("image", "gen", "red", 0)
    assert content_key("image", "gen", "red", 0) != content_key("image", "gen", "red", 1)


def test_round_trip_and_no_temporary_files(tmp_path):
    cache = DiskCache(tmp_path)
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    cache.save_image("ab12", image)
    cache.save_array("cd34", np.arange(4, dtype=np.float32))
    assert cache.load_image("ab12").getpixel((0, 0)) == (200, 10, 10)
    np.testing.assert_array_equal(cache.load_array("cd34"), np.arange(4))
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    assert cache.stats["image_hit"] == 1 and cache.stats["activation_hit"] == 1


def test_corrupt_entries_are_removed_and_reported_as_misses(tmp_path):
    cache = DiskCache(tmp_path)
    cache.save_image("ab12", Image.new("RGB", (8, 8)))
    cache.save_array("cd34", np.ones(3))
    data = cache.image_path("ab12").read_bytes()
    cache.image_path("ab12").write_bytes(data[: len(data) // 2])  # truncated
    cache.array_path("cd34").write_bytes(b"garbage")
    assert cache.load_image("ab12") is None
    assert cache.load_array("cd34") is None
    assert not cache.image_path("ab12").exists() and not cache.array_path("cd34").exists()
    assert cache.stats["image_repaired"] == 1 and cache.stats["activation_repaired"] == 1
