"""The plain-PyTorch Unsup3d renderer: analytic depths, gradients against finite differences, CPU/CUDA parity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.unsup3d.renderer import Renderer, grid_faces, rotation_matrix, scale_view

SIZE = 64
DEPTH_RANGE = 0.2  # 0.9 - 1.1
TOL = 1e-3 * DEPTH_RANGE
CENTRE = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def _view(rot_deg: tuple[float, float, float], trans: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor([[*(math.radians(a) for a in rot_deg), *trans]], dtype=torch.float64)


def _rays(renderer: Renderer) -> torch.Tensor:
    """[H, W, 3] rays K^-1 (u, v, 1) in float64."""
    return renderer.depth_to_3d_grid(torch.ones(1, SIZE, SIZE, dtype=torch.float64))[0]


def _move(points: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    rot = rotation_matrix(view[:, :3])[0]
    return (points - CENTRE) @ rot.T + CENTRE + view[0, 3:]


def _unmove(points: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    rot = rotation_matrix(view[:, :3])[0]
    return (points - CENTRE - view[0, 3:]) @ rot + CENTRE


def _plane_depth(rays: torch.Tensor, normal: torch.Tensor, offset: float) -> torch.Tensor:
    return offset / (rays @ normal)


def _sphere_depth(rays: torch.Tensor, centre: torch.Tensor, radius: float) -> torch.Tensor:
    a = (rays * rays).sum(-1)
    b = rays @ centre
    c = centre @ centre - radius**2
    return (b - (b * b - a * c).clamp(min=0).sqrt()) / a


def _interior(renderer: Renderer, rays: torch.Tensor, depth: torch.Tensor, view: torch.Tensor,
              canonical_depth) -> torch.Tensor:
    """Pixels whose analytic surface point lies on the canonical mesh, 1.5 pixels inside its border."""
    seen = _unmove(rays * depth.unsqueeze(-1), view)
    uv = renderer.project(seen)
    inside = ((uv > 1.5) & (uv < SIZE - 2.5)).all(-1)
    front = (canonical_depth(seen / seen[..., 2:]) - seen[..., 2]).abs() < 1e-6  # not a hidden back point
    return inside & front


@pytest.mark.parametrize("rot_deg,trans", [((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
                                           ((0.0, 0.0, 0.0), (0.03, -0.02, 0.05)),
                                           ((12.0, -25.0, 7.0), (0.02, 0.01, 0.0)),
                                           ((-30.0, 40.0, -15.0), (-0.05, 0.04, 0.02))])
@pytest.mark.parametrize("surface", ["fronto", "tilted", "sphere"])
def test_analytic_depth(surface: str, rot_deg: tuple, trans: tuple) -> None:
    renderer = Renderer(SIZE)
    rays = _rays(renderer)
    view = _view(rot_deg, trans)
    rot = rotation_matrix(view[:, :3])[0]
    if surface == "sphere":
        centre, radius = torch.tensor([0.0, 0.0, 1.2], dtype=torch.float64), 0.3
        canonical = lambda r: _sphere_depth(r, centre, radius)  # noqa: E731
        moved = _move(centre, view)
        expected = _sphere_depth(rays, moved, radius)
    else:
        normal = torch.tensor([0.0, 0.0, 1.0] if surface == "fronto" else [0.15, -0.1, 1.0], dtype=torch.float64)
        normal = normal / normal.norm()
        offset = float(normal @ CENTRE)
        canonical = lambda r: _plane_depth(r, normal, offset)  # noqa: E731
        moved_normal = rot @ normal
        moved_offset = offset - float(normal @ CENTRE) + float(moved_normal @ (CENTRE + view[0, 3:]))
        expected = _plane_depth(rays, moved_normal, moved_offset)
    canon_depth = canonical(rays).unsqueeze(0)
    got = renderer.render_depth(renderer.warped_3d_grid(canon_depth, view).reshape(1, -1, 3),
                                grid_faces(SIZE, SIZE), (SIZE, SIZE))[0]
    mask = _interior(renderer, rays, expected, view, canonical)
    assert mask.sum() > 400, f"only {int(mask.sum())} interior pixels"
    error = (got - expected)[mask].abs().max().item()
    assert error < TOL, f"{surface} {rot_deg} {trans}: max depth error {error:.2e}"
    # float32, as in training, also within tolerance
    got32 = renderer.warp_canon_depth(canon_depth.float(), view.float())[0]
    assert (got32.double() - expected)[mask].abs().max().item() < TOL


def test_identity_view_reproduces_depth_and_grid() -> None:
    renderer = Renderer(SIZE)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    depth = (1.05 - 0.1 * torch.exp(-2 * (xx**2 + yy**2))).unsqueeze(0)
    recon, grid = renderer.warp_canon_to_2d(depth, torch.zeros(1, 6))
    assert torch.allclose(recon, depth, atol=1e-6)
    image = torch.rand(1, 3, SIZE, SIZE)
    warped = F.grid_sample(image, grid, mode="bilinear", align_corners=True)
    assert torch.allclose(warped, image, atol=1e-4)


def test_background_and_chunking_agree() -> None:
    """A rough depth (huge sliver triangles) renders the same with tiny chunks; nothing drawn -> far."""
    torch.manual_seed(0)
    depth = torch.rand(3, 32, 32) * 0.2 + 0.9
    view = scale_view(torch.rand(3, 6) * 2 - 1)
    big = Renderer(32).warp_canon_depth(depth, view)
    small = Renderer(32, chunk=500).warp_canon_depth(depth, view)
    assert torch.equal(big, small)
    far = Renderer(32).render_depth(torch.tensor([[[0.0, 0.0, -1.0]] * 3]), torch.tensor([[0, 1, 2]]))
    assert torch.all(far == 10.0)


def test_render_rgb_constant_colour_and_yaw() -> None:
    renderer = Renderer(32)
    depth = torch.ones(2, 32, 32)
    image = torch.zeros(2, 3, 32, 32)
    image[:, 0] = 0.25
    frames = renderer.render_yaw(image, depth, [-0.5, 0.0, 0.5])
    assert frames.shape == (2, 3, 3, 32, 32)
    assert torch.allclose(frames[:, 1], image, atol=1e-6)  # no yaw: the image itself
    turned = frames[:, 0]
    covered = turned[:, 1] == 0  # drawn pixels carry the colour, the rest the white background
    assert covered.any() and (~covered).any()
    assert torch.allclose(turned[:, 0][covered], torch.tensor(0.25))
    assert torch.all(turned[~covered.unsqueeze(1).expand_as(turned)] == 1.0)


def test_normals_of_a_plane() -> None:
    renderer = Renderer(SIZE)
    normal = renderer.get_normal_from_depth(torch.ones(1, SIZE, SIZE))
    # Unsup3d divides by (norm + 1e-7); the unnormalised cross product is tiny at fov 10, hence the tolerance
    assert torch.allclose(normal, torch.tensor([0.0, 0.0, 1.0]).expand_as(normal), atol=5e-3)
    assert torch.allclose(normal[..., :2], torch.zeros(1), atol=1e-6)


def test_gradcheck_depth_and_view() -> None:
    """Rendered depth vs finite differences, w.r.t. the depth map and the 6 view numbers (float64, 6x6)."""
    renderer = Renderer(6)
    gen = torch.Generator().manual_seed(3)
    depth = (1.0 + 0.01 * torch.randn(1, 6, 6, generator=gen, dtype=torch.float64)).requires_grad_()
    view = torch.tensor([[0.03, -0.05, 0.02, 0.004, -0.003, 0.01]], dtype=torch.float64, requires_grad=True)
    faces = grid_faces(6, 6)

    def render(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return renderer.render_depth(renderer.warped_3d_grid(d, v).reshape(1, -1, 3), faces, (6, 6))

    drawn = render(depth, view) < renderer.far
    assert drawn.sum() >= 20
    assert torch.autograd.gradcheck(render, (depth, view), eps=1e-6, atol=1e-6, rtol=1e-4)

    def warp(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return renderer.warp_canon_to_2d(d, v)[1]

    assert torch.autograd.gradcheck(warp, (depth, view), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_flows_to_depth_and_view_float32() -> None:
    renderer = Renderer(16)
    depth = torch.full((2, 16, 16), 1.0, requires_grad=True)
    view = torch.tensor([[0.1, 0.2, 0.0, 0.01, 0.0, 0.0]] * 2, requires_grad=True)
    recon, grid = renderer.warp_canon_to_2d(depth, view)
    (recon.sum() + grid.sum()).backward()
    assert depth.grad.abs().sum() > 0 and view.grad.abs().sum() > 0
    assert torch.isfinite(depth.grad).all() and torch.isfinite(view.grad).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree() -> None:
    renderer = Renderer(SIZE)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    depth = (1.05 - 0.1 * torch.exp(-2 * (xx**2 + yy**2))).expand(4, SIZE, SIZE).contiguous()
    view = scale_view(torch.linspace(-0.8, 0.8, 24).view(4, 6))
    results = []
    for device in ("cpu", "cuda"):
        d = depth.to(device).requires_grad_()
        v = view.to(device).requires_grad_()
        recon, grid = renderer.warp_canon_to_2d(d, v)
        (recon.sum() + grid.sum()).backward()
        results.append([t.detach().cpu() for t in (recon, grid, d.grad, v.grad)])
    for cpu, cuda in zip(*results):
        assert torch.allclose(cpu, cuda, atol=1e-3, rtol=1e-3)
