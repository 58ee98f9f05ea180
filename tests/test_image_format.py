"""`image_format.encode_as`: what an upstream image model answered is opened by Pillow in the
server's process, so only the formats an images API answers are decoded (PNG, JPEG, WebP),
never any of Pillow's other plugins (EPS would run Ghostscript)."""

from __future__ import annotations

import io

import pytest
from PIL import EpsImagePlugin, Image

from threadline.providers.image_format import NotAnImage, encode_as

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
    b"0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
)


def picture(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_the_formats_an_images_api_answers_are_re_encoded(fmt: str) -> None:
    made = encode_as(picture(fmt), "png")
    assert (made.mime_type, made.width, made.height) == ("image/png", 16, 16)
    assert Image.open(io.BytesIO(made.data)).format == "PNG"


def test_an_eps_answer_never_reaches_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def ghostscript(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError("Ghostscript was run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    with pytest.raises(NotAnImage):
        encode_as(EPS, "png")
    assert calls == []


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO", "PCX"])
def test_other_pillow_formats_are_not_decoded(fmt: str) -> None:
    with pytest.raises(NotAnImage):
        encode_as(picture(fmt), "png")
