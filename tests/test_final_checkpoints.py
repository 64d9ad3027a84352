"""A final model's checkpoint (grutune.final.checkpoints): read back exactly, refused for other data, and a damaged or
foreign file named as such without advice to unpickle it."""

import pytest
import torch

from grutune.errors import GrutuneError
from grutune.final.checkpoints import load_checkpoint, load_classifier, save_checkpoint
from grutune.models import RecurrentClassifier


def test_the_classifier_is_read_back_as_saved_and_refused_for_other_data(tmp_path):
    torch.manual_seed(0)
    model = RecurrentClassifier(
        in_shape=(28, 28, 1),
        num_classes=10,
        cell="lstm",
        hidden_size=8,
        num_layers=2,
        bidirectional=True,
        dropout=0.1,
        backbone="conv",
    ).eval()
    save_checkpoint(tmp_path / "classifier.pt", model, data_hash="sha256:abc", epoch=3)
    loaded, ckpt = load_classifier(tmp_path / "classifier.pt", "sha256:abc")
    assert loaded.kwargs == model.kwargs and ckpt["epoch"] == 3
    x = torch.rand(4, 28, 28, 1)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))
    with pytest.raises(GrutuneError, match=r"trained on other data \(sha256:abc\).*rerun the train stage"):
        load_classifier(tmp_path / "classifier.pt", "sha256:abd")


@pytest.mark.parametrize(
    "content, says",
    [
        (b"\x00" * 7 + b"not a checkpoint", "damaged or not one of grutune's"),  # unpickling refused
        (b"PK\x03\x04truncated", "damaged or truncated"),  # a zip that ends early
        (None, "not one of grutune's"),  # a torch file without grutune's keys
    ],
)
def test_a_damaged_or_foreign_checkpoint_is_a_clear_error(tmp_path, content, says):
    path = tmp_path / "classifier.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(GrutuneError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and says in message and "rerun the stage" in message
    assert "weights_only` set to `False`" not in message and "\n" not in message  # no advice to unpickle, one line
