"""File clues with known answers: JPEGs, metadata and Content Credentials made by the tests."""
import datetime
import io
import struct

import numpy as np
import pytest
from PIL import Image

from forgeryloc.data.jpeg_tables import ijg_tables
from forgeryloc.evidence import c2pa_clue, file_clues
from forgeryloc.evidence.file_clues import ijg_quality
from forgeryloc.imaging import decode_picture
from forgeryloc.jpeg_input import read_coefficients


def photo(height=96, width=128, seed=0) -> np.ndarray:
    """A smooth picture with texture: enough AC energy for every test here."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0)
    rgb = base[..., None] + rng.normal(0, 12, (height, width, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def jpeg_bytes(rgb, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def clues_of(data: bytes) -> dict:
    picture, meta = decode_picture(data)
    jpeg, note = read_coefficients(data, None, meta.orientation)
    return file_clues(data, meta, picture, jpeg, note)


@pytest.mark.parametrize("quality", [35, 75, 90])
def test_ijg_tables_are_standard_with_their_quality(quality):
    clues = clues_of(jpeg_bytes(photo(), quality=quality))["jpeg"]
    assert clues["ijg_standard"] is True
    assert clues["quality"] == quality
    assert clues["tables"]["luma"] == list(ijg_tables(quality).luma)
    assert clues["coding"] == "baseline" and clues["subsampling"] == "4:2:0"


def test_other_tables_are_not_standard_and_group_by_fingerprint():
    luma = list(ijg_tables(80).luma)
    luma[-1] += 7  # one step no IJG quality gives
    chroma = list(ijg_tables(80).chroma)
    first = clues_of(jpeg_bytes(photo(seed=1), qtables=[luma, chroma]))["jpeg"]
    second = clues_of(jpeg_bytes(photo(seed=2), qtables=[luma, chroma]))["jpeg"]
    standard = clues_of(jpeg_bytes(photo(seed=1), quality=80))["jpeg"]
    assert first["ijg_standard"] is False and first["quality"] == 80  # nearest, not exact
    assert first["fingerprint"] == second["fingerprint"] != standard["fingerprint"]
    flat = clues_of(jpeg_bytes(photo(), qtables=[[3] * 64, [5] * 64]))["jpeg"]
    assert flat["ijg_standard"] is False
    assert ijg_quality(np.array(ijg_tables(50).luma), None) == (50.0, True)


def test_progressive_and_subsampling_are_read():
    clues = clues_of(jpeg_bytes(photo(), quality=85, progressive=True, subsampling=0))["jpeg"]
    assert clues["coding"] == "progressive" and clues["subsampling"] == "4:4:4"
    grey = clues_of(jpeg_bytes(photo()[..., 0], quality=85))["jpeg"]
    assert grey["subsampling"] == "grey" and "chroma" not in grey["tables"]


def test_corrupt_entropy_coded_data_gives_a_decode_warning():
    data = bytearray(jpeg_bytes(photo(128, 160), quality=90))
    start = data.index(b"\xff\xda") + 14  # past the scan header: entropy-coded data
    for offset in range(start + 50, len(data) - 200, 97):
        if 0xFF not in (data[offset], data[offset - 1], data[offset] ^ 0x5A):
            data[offset] ^= 0x5A  # flipped bits: the Huffman decoder loses its way
    clues = clues_of(bytes(data))
    assert clues["decode_warnings"], clues
    assert any("Corrupt JPEG data" in warning or "JPEG" in warning
               for warning in clues["decode_warnings"])
    assert clues_of(jpeg_bytes(photo(), quality=90))["decode_warnings"] == []


def test_png_has_no_jpeg_clues():
    buffer = io.BytesIO()
    Image.fromarray(photo()).save(buffer, "PNG")
    clues = clues_of(buffer.getvalue())
    assert clues["jpeg"] is None and clues["decode_warnings"] == []


# --------------------------------------------------------------------------- metadata

def tiff_exif(ifd0: dict, exif: dict, thumbnail: bytes | None = None) -> bytes:
    """EXIF bytes (a little-endian TIFF): IFD0 with ASCII fields, its Exif sub-IFD with
    ASCII, LONG and RATIONAL fields, and IFD1 pointing at a JPEG thumbnail."""
    def encode(value):
        if isinstance(value, str):
            return 2, len(value) + 1, value.encode() + b"\x00"
        if isinstance(value, tuple):
            return 5, 1, struct.pack("<II", *value)
        return 4, 1, struct.pack("<I", value)

    def block(fields: dict, at: int, following: int) -> bytes:
        """An IFD at offset `at` (its values after it), then the next IFD's offset."""
        data_at = at + 2 + 12 * len(fields) + 4
        table, extra = b"", b""
        for tag, value in sorted(fields.items()):
            kind, count, raw = encode(value)
            if len(raw) <= 4:
                table += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\x00")
            else:
                table += struct.pack("<HHII", tag, kind, count, data_at + len(extra))
                extra += raw + b"\x00" * (len(raw) % 2)
        return struct.pack("<H", len(fields)) + table + struct.pack("<I", following) + extra

    def size(fields: dict) -> int:
        return len(block(fields, 0, 0))

    first = {**ifd0, 0x8769: 0}
    exif_at = 8 + size(first)
    first[0x8769] = exif_at
    ifd1_at = exif_at + size(exif)
    ifd1 = {0x0201: 0, 0x0202: len(thumbnail or b"")}
    ifd1[0x0201] = ifd1_at + size(ifd1)
    out = b"II*\x00" + struct.pack("<I", 8)
    out += block(first, 8, ifd1_at if thumbnail else 0) + block(exif, exif_at, 0)
    if thumbnail:
        out += block(ifd1, ifd1_at, 0) + thumbnail
    return b"Exif\x00\x00" + out


def test_metadata_clues_are_named():
    rgb = photo(120, 160)
    own = jpeg_bytes(np.asarray(Image.fromarray(rgb).resize((40, 30))), quality=80)
    other = jpeg_bytes(np.asarray(Image.fromarray(rgb[::-1, ::-1]).resize((40, 30))),
                       quality=80)
    base = {0x010F: "Canon", 0x0110: "Canon EOS 5D", 0x0132: "2024:05:06 10:00:00"}
    camera = {0x9003: "2024:05:06 10:00:00", 0x829A: (1, 125), 0x829D: (28, 10),
              0x8827: 200, 0x920A: (50, 1)}
    clean = clues_of(jpeg_bytes(rgb, quality=90, exif=tiff_exif(base, camera, own)))
    assert clean["metadata"] == {}
    edited = {**base, 0x0131: "Adobe Photoshop 25.0 (Windows)",
              0x0132: "2024:07:01 09:30:00"}
    clues = clues_of(jpeg_bytes(rgb, quality=90,
                                exif=tiff_exif(edited, {0x9003: "2024:05:06 10:00:00"},
                                               other)))["metadata"]
    assert clues["editing_software"] == ["Adobe Photoshop 25.0 (Windows)"]
    assert clues["dates_differ"] == {"original": "2024-05-06 10:00:00",
                                     "modified": "2024-07-01 09:30:00"}
    assert clues["camera_fields_missing"] == ["ExposureTime", "FNumber", "ISOSpeedRatings",
                                              "FocalLength"]
    assert clues["thumbnail_differs"]["similarity"] < 0.75
    firmware = clues_of(jpeg_bytes(rgb, exif=tiff_exif({**base, 0x0131: "Ver.1.0.2"},
                                                       camera)))["metadata"]
    assert "editing_software" not in firmware


def test_xmp_creator_tool_is_an_editing_clue():
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
           b'xmp:CreatorTool="GIMP 2.10" xmp:CreateDate="2023-01-02T03:04:05+01:00" '
           b'xmp:ModifyDate="2023-02-02T03:04:05+01:00"/></rdf:RDF></x:xmpmeta>')
    clues = clues_of(jpeg_bytes(photo(), quality=90, xmp=xmp))["metadata"]
    assert clues["editing_software"] == ["GIMP 2.10"]
    assert clues["dates_differ"]["modified"] == "2023-02-02 03:04:05"


# --------------------------------------------------------------------------- C2PA

def throwaway_signer():
    """A signer with a CA and an end-entity certificate made here, valid for two days."""
    c2pa = pytest.importorskip("c2pa", reason="c2pa-python is not installed")
    x509 = pytest.importorskip("cryptography.x509", reason="cryptography is not installed")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forgeryloc tests")])

    def usage(signing: bool):
        return x509.KeyUsage(digital_signature=signing, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=not signing,
                             crl_sign=not signing, encipher_only=False, decipher_only=False)

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject, issuer, public, signing_key, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(usage(not ca), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                                  critical=False))
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            ).add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    authority = certificate(name("test CA"), name("test CA"), ca_key.public_key(), ca_key, True)
    signer = certificate(name("test signer"), authority.subject, key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    chain = signer.public_bytes(pem) + authority.public_bytes(pem)
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, private, None)
    return c2pa, c2pa.Signer.from_info(info)


def test_c2pa_manifest_actions_and_tampering():
    c2pa, signer = throwaway_signer()
    manifest = {"claim_generator_info": [{"name": "forgeryloc-tests", "version": "1.0"}],
                "title": "made.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType":
                     "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"},
                    {"action": "c2pa.edited"}]}}]}
    signed = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, "image/jpeg", io.BytesIO(jpeg_bytes(photo(), quality=90)), signed)
    data = signed.getvalue()
    record = clues_of(data)["c2pa"]
    assert record["manifest"] is True
    assert record["claim_generator"] == "forgeryloc-tests 1.0"
    assert record["signer"]["common_name"] == "test signer"
    assert record["validation_state"] == "Valid"
    assert [a["action"] for a in record["actions"]] == ["c2pa.created", "c2pa.edited"]
    assert record["actions"][0]["digital_source_type"] == "trainedAlgorithmicMedia"
    tampered = bytearray(data)
    tampered[-300] ^= 0x55  # a byte of the picture, after the manifest
    broken = clues_of(bytes(tampered))["c2pa"]
    assert broken["validation_state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in broken["failures"]
    assert clues_of(jpeg_bytes(photo(), quality=90))["c2pa"] == {"manifest": False}


def test_without_the_binding_the_record_says_not_checked(monkeypatch):
    monkeypatch.setattr(c2pa_clue, "_binding", lambda: None)
    assert c2pa_clue.c2pa_record(b"\xff\xd8", "JPEG") == \
        "not checked (install forgeryloc[c2pa])"
