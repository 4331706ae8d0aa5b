import numpy as np
import torch
import torch.nn.functional as F

from pointseg.sampling import project, sample_bilinear


def test_projection_formula_maps_pixel_centres_by_the_size_ratio():
    # w = 64 px, w_f = 16 cells: pixel x has centre x + 0.5 → x_f = (x + 0.5) / 4, cell index x_f - 0.5
    uv = project(np.array([[0, 0], [1.5, 2], [63, 31]]), extent=(32, 64), grid_size=(8, 16))
    np.testing.assert_allclose(uv[:, 0], [0.5 / 4 - 0.5, 2.0 / 4 - 0.5, 63.5 / 4 - 0.5])
    np.testing.assert_allclose(uv[:, 1], [0.5 / 4 - 0.5, 2.5 / 4 - 0.5, 31.5 / 4 - 0.5])


def test_projection_centre_of_a_cell_lands_on_the_cell():
    # the 4x4 block of pixels 4..7 has its centre at 6.0 in continuous image coordinates = pixel 5.5
    uv = project(np.array([[5.5, 5.5]]), extent=(16, 16), grid_size=(4, 4))
    np.testing.assert_allclose(uv, [[1.0, 1.0]])


def test_bilinear_sampling_at_cell_centres_returns_the_cells_and_interpolates_between():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    out = sample_bilinear(data, np.array([[3.0, 2.0], [3.5, 2.0], [0.0, 5.0]]))
    np.testing.assert_allclose(out[0], data[:, 2, 3], rtol=1e-6)
    np.testing.assert_allclose(out[1], (data[:, 2, 3] + data[:, 2, 4]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[2], data[:, 5, 0], rtol=1e-6)


def test_sampling_agrees_with_the_upsampling_used_for_prediction():
    """A point's sampled vector equals the align_corners=False upsampled map at that pixel."""
    rng = np.random.default_rng(2)
    data = rng.normal(size=(3, 8, 10)).astype(np.float32)
    up = F.interpolate(torch.from_numpy(data)[None], size=(32, 40), mode="bilinear", align_corners=False)[0]
    xy = np.array([[0, 0], [5, 7], [39, 31], [17, 3], [22, 30]])
    sampled = sample_bilinear(data, project(xy, (32, 40), (8, 10)))
    expected = up[:, xy[:, 1], xy[:, 0]].T.numpy()
    np.testing.assert_allclose(sampled, expected, atol=1e-5)
