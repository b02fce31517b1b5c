#!/usr/bin/python3
"""The NumPy step of the weight export check (see npz_check.cpp).

Reads DIR/weights.npz (stored) and DIR/probe.npz (deflated) as lightloop
wrote them, checks the names, dtypes and shapes (and each member's bytes
against numpy.save's), redoes the forward pass of the 6-32-16-4 tanh network
with numpy and compares it with lightloop's output; then writes changed
weights (halved, biases shifted; float64, compressed) to DIR/from_numpy.npz
and numpy's forward pass with them to DIR/numpy_output.npz.
Exits 77 (CTest: skipped) when numpy is absent.
"""
import io
import sys
import zipfile

try:
    import numpy as np
except ImportError:
    print("numpy is not installed: skipped")
    sys.exit(77)


def forward(weights, x):
    h = x.astype(np.float64)
    for i in range(3):
        a = h @ weights[f"layer{i}.weight"].T.astype(np.float64) + weights[f"layer{i}.bias"]
        h = np.tanh(a) if i < 2 else a
    return h


def main(directory):
    weights = dict(np.load(f"{directory}/weights.npz"))
    probe = np.load(f"{directory}/probe.npz")
    expected = {"layer0.weight": (32, 6), "layer0.bias": (32,), "layer1.weight": (16, 32),
                "layer1.bias": (16,), "layer2.weight": (4, 16), "layer2.bias": (4,)}
    assert sorted(weights) == sorted(expected), sorted(weights)
    for name, shape in expected.items():
        assert weights[name].shape == shape, (name, weights[name].shape)
        assert weights[name].dtype == np.float32, (name, weights[name].dtype)
    assert np.any(weights["layer0.bias"] != 0), "trained biases should not all be zero"
    assert probe["input64"].dtype == np.float64 and probe["input64"].shape == probe["input"].shape
    assert np.array_equal(probe["input64"], probe["input"].astype(np.float64))
    assert probe["counts"].dtype == np.int32 and probe["counts"].tolist() == [-3, 0, 70000]
    assert probe["scalar"].dtype == np.uint8 and probe["scalar"].shape == () and probe["scalar"] == 1
    # Every member byte for byte what numpy.save writes: the header (its text
    # and padding, also for "empty", whose shape numpy would not allocate) and
    # the data.
    for path, method in ((f"{directory}/weights.npz", zipfile.ZIP_STORED),
                         (f"{directory}/probe.npz", zipfile.ZIP_DEFLATED)):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                assert archive.getinfo(member).compress_type == method, (path, member)
                raw = archive.read(member)
                stream = io.BytesIO(raw)
                assert np.lib.format.read_magic(stream) == (1, 0), (path, member)
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    header, {"descr": np.lib.format.dtype_to_descr(dtype),
                             "fortran_order": fortran, "shape": shape})
                assert raw[:stream.tell()] == header.getvalue(), (path, member, raw[:stream.tell()])
                if member != "empty.npy":
                    saved = io.BytesIO()
                    np.save(saved, np.load(path)[member[:-len(".npy")]])
                    assert raw == saved.getvalue(), (path, member)
    gap = np.max(np.abs(forward(weights, probe["input"]) - probe["output"]))
    print(f"numpy's forward pass with lightloop's weights: max |diff| {gap:.3g}")
    assert gap < 1e-5, gap

    changed = {}
    for name, value in weights.items():
        changed[name] = value.astype(np.float64) * 0.5 if name.endswith("weight") \
            else value.astype(np.float64) + 0.25
    # Fortran order for one matrix, as a transposed copy would have.
    changed["layer1.weight"] = np.asfortranarray(changed["layer1.weight"])
    np.savez_compressed(f"{directory}/from_numpy.npz", **changed)
    np.savez(f"{directory}/numpy_output.npz",
             output=forward(changed, probe["input"]).astype(np.float32))
    print("wrote from_numpy.npz and numpy_output.npz")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: npz_numpy_check.py DIR")
        sys.exit(2)
    main(sys.argv[1])
