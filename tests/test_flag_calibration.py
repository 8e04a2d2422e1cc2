"""scripts/calibrate_flag_threshold.py: the false-alarm rule and the authentic halves."""
import numpy as np
import pytest
from PIL import Image
from script_loading import load_script


@pytest.fixture(scope="module")
def calibration():
    return load_script("calibrate_flag_threshold")


def test_the_lowest_threshold_that_keeps_false_alarms_within_the_rate(calibration):
    authentic = np.array([0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999])
    candidates = np.unique(np.concatenate([authentic, [0.3, 0.96, 0.98]]))
    # at most 2 of 10 may reach it: 0.99 lets 3 through, 0.995 two
    assert calibration.lowest_threshold_within(authentic, candidates, 0.2) == 0.995
    assert calibration.false_alarms(authentic, 0.995) == 0.2
    assert calibration.lowest_threshold_within(authentic, candidates, 0.4) == 0.96
    assert calibration.lowest_threshold_within(authentic, candidates, 0.5) == 0.95
    with pytest.raises(SystemExit):
        calibration.lowest_threshold_within(authentic, candidates, 0.05)


def test_authentic_halves_alternate_in_name_order(calibration, tmp_path):
    for name in ("d.jpg", "a.png", "c.jpg", "b.jpg", "e.tif"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    calibrate, held_out = calibration.authentic_halves(tmp_path)
    assert [s.name for s in calibrate] == ["a.png", "c.jpg", "e.tif"]
    assert [s.name for s in held_out] == ["b.jpg", "d.jpg"]
    assert not any(s.tampered or s.mask for s in calibrate + held_out)


def test_listed_samples_read_a_folder_or_a_list(calibration, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("b.jpg", "a.png"):
        Image.new("RGB", (8, 8)).save(photos / name)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{photos / 'b.jpg'}\n\n{photos / 'a.png'}\n")
    assert [s.image.name for s in calibration.listed_samples(photos)] == ["a.png", "b.jpg"]
    assert [s.image.name for s in calibration.listed_samples(listing)] == ["b.jpg", "a.png"]
    assert not any(s.tampered for s in calibration.listed_samples(listing))


def test_edited_pictures_leave_the_halves_which_keep_their_places(calibration, tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    listing = tmp_path / "edited.txt"
    listing.write_text("# pictures with a watermark\nc.jpg  # position 2\n\nb.jpg\n")
    edited = calibration.edited_names(listing)
    assert edited == {"b.jpg", "c.jpg"}
    calibrate, held_out = calibration.authentic_halves(tmp_path)
    assert [[s.name for s in part] for part in calibration.split_edited(calibrate, edited)] \
        == [["a.jpg", "e.jpg"], ["c.jpg"]]
    assert [[s.name for s in part] for part in calibration.split_edited(held_out, edited)] \
        == [["d.jpg"], ["b.jpg"]]
    assert calibration.edited_names(None) == set()
