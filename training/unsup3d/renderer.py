"""Unsup3d's camera and geometry in plain PyTorch: depth-grid meshes, views, a z-buffered rasteriser.

Conventions follow Unsup3d (elliottwu/unsup3d, `renderer/renderer.py`): a pinhole camera with a field of view
of `fov` degrees over `image_size - 1` pixel spacings, pixel (row i, column j) at image coordinates (u, v) =
(j, i), camera x to the right, y down, z forward. A depth map becomes a 3-D grid `depth * K^-1 [u, v, 1]`;
a view is 6 numbers (rotations about x, y, z in radians, then a translation), applied as
`R (p - c) + c + t` with `R = Rz Ry Rx` and the rotation centre `c = (0, 0, rot_center_depth)`.

The grid becomes a mesh of two triangles per cell. `render_depth` rasterises it with a z-buffer (both
triangle orientations drawn: neural_renderer's `fill_back=True`), each pixel keeping the nearest triangle and
the perspective-correct interpolation of its camera-space depth (1/z is linear in the image). Which triangle
wins is a discrete choice made without gradients; the depth of the winner is then recomputed from its
vertices with autograd, so the result is differentiable with respect to the vertices (hence the depth map
and the view). Pixels sample at integer (u, v), the same points `depth_to_3d_grid` unprojects, so an
identity view reproduces the depth map exactly (neural_renderer samples half a pixel off).

Rasterisation is vectorised over (batch, triangle) pairs: each triangle's pixel bounding box, bucketed by
size (2, 4, 8, ... pixels square), is enumerated in chunks of at most `chunk` candidates, so memory stays
bounded whatever the view. `backend="neural_renderer"` (the `cuda-render` extra) renders through
neural_renderer instead, behind the same interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["EPS", "Rasterised", "Renderer", "grid_faces", "rotation_matrix", "scale_view", "transform_matrices"]

EPS = 1e-7


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """[B, 3] angles (radians, about x, y, z) -> [B, 3, 3] `Rz @ Ry @ Rx`."""
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(angles[:, 0]), torch.zeros_like(angles[:, 0])
    cx, cy, cz = cos.unbind(1)
    sx, sy, sz = sin.unbind(1)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def transform_matrices(view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A [B, 6] (or [B, 5] / [B, 3]) view -> (rotation [B, 3, 3], translation [B, 1, 3])."""
    b = view.shape[0]
    rot = rotation_matrix(view[:, :3])
    trans = view.new_zeros(b, 1, 3)
    if view.shape[1] > 3:
        extra = view[:, 3:]
        trans = torch.cat([extra, view.new_zeros(b, 3 - extra.shape[1])], 1).view(b, 1, 3)
    return rot, trans


def scale_view(raw: torch.Tensor, rotation_deg: float = 60.0, xy_translation: float = 0.1,
               z_translation: float = 0.0) -> torch.Tensor:
    """netV's [B, 6] output in [-1, 1] -> a view (rotations in radians within +-`rotation_deg`, translations)."""
    scale = raw.new_tensor([math.radians(rotation_deg)] * 3 + [xy_translation] * 2 + [z_translation])
    return raw * scale


def grid_faces(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[2 (h-1)(w-1), 3] vertex indices of the grid mesh, Unsup3d's order (upper-left triangles first)."""
    idx = torch.arange(h * w, device=device).view(h, w)
    upper = torch.stack([idx[:-1, :-1], idx[1:, :-1], idx[:-1, 1:]], -1).reshape(-1, 3)
    lower = torch.stack([idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]], -1).reshape(-1, 3)
    return torch.cat([upper, lower], 0)


@dataclass
class Rasterised:
    """Per pixel (flattened [B * H * W]): the winning face (-1: none) and its differentiable barycentrics."""

    face: torch.Tensor  # [B*H*W] long, index into faces, -1 where nothing is drawn
    pixels: torch.Tensor  # [P] flat indices of the covered pixels
    weights: torch.Tensor  # [P, 3] perspective-correct barycentric weights (sum to 1)
    depth: torch.Tensor  # [P] camera-space depth of the covered pixels (differentiable)


class Renderer:
    """Unsup3d's renderer: camera intrinsics, view transforms, normals, depth and RGB rasterisation."""

    def __init__(self, image_size: int = 64, min_depth: float = 0.9, max_depth: float = 1.1,
                 rot_center_depth: float | None = 1.0, fov: float = 10.0, near: float = 0.1, far: float = 10.0,
                 backend: str = "torch", chunk: int = 1 << 21) -> None:
        self.image_size = image_size
        self.min_depth, self.max_depth = min_depth, max_depth
        self.rot_center_depth = (min_depth + max_depth) / 2 if rot_center_depth is None else rot_center_depth
        self.fov, self.near, self.far = fov, near, far
        self.chunk = chunk
        self.focal = (image_size - 1) / 2 / math.tan(math.radians(fov) / 2)
        self.center = (image_size - 1) / 2
        if backend not in ("torch", "neural_renderer"):
            raise ValueError(f"unknown renderer backend {backend!r} (torch or neural_renderer)")
        self.backend = backend
        self._nr = None

    # ------------------------------------------------------------------ camera
    def K(self, like: torch.Tensor) -> torch.Tensor:
        """The [3, 3] intrinsics in `like`'s dtype and device."""
        f, c = self.focal, self.center
        return like.new_tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])

    def depth_to_3d_grid(self, depth: torch.Tensor) -> torch.Tensor:
        """[B, H, W] depth -> [B, H, W, 3] camera-space points `depth * K^-1 (u, v, 1)`."""
        _, h, w = depth.shape
        v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype, device=depth.device),
                              torch.arange(w, dtype=depth.dtype, device=depth.device), indexing="ij")
        x = (u - self.center) / self.focal
        y = (v - self.center) / self.focal
        rays = torch.stack([x, y, torch.ones_like(x)], -1)
        return rays.unsqueeze(0) * depth.unsqueeze(-1)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """[..., 3] camera-space points -> [..., 2] pixel coordinates (u, v)."""
        z = points[..., 2:3]
        return points[..., :2] / z * self.focal + self.center

    def grid_3d_to_2d(self, grid_3d: torch.Tensor) -> torch.Tensor:
        """[B, H, W, 3] points -> [B, H, W, 2] `grid_sample` coordinates in [-1, 1] (align_corners=True)."""
        _, h, w, _ = grid_3d.shape
        uv = self.project(grid_3d)
        size = grid_3d.new_tensor([w - 1, h - 1])
        return uv / size * 2 - 1

    def rotate(self, points: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """[B, N, 3] points rotated by [B, 3, 3] about the rotation centre."""
        centre = points.new_tensor([0.0, 0.0, self.rot_center_depth]).view(1, 1, 3)
        return (points - centre) @ rot.transpose(1, 2) + centre

    def warped_3d_grid(self, depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """The canonical depth's 3-D grid moved into the view: `R (p - c) + c + t`, [B, H, W, 3]."""
        b, h, w = depth.shape
        rot, trans = transform_matrices(view)
        points = self.rotate(self.depth_to_3d_grid(depth).reshape(b, -1, 3), rot) + trans
        return points.reshape(b, h, w, 3)

    def inv_warped_3d_grid(self, depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """The view's depth map's 3-D grid moved back into the canonical frame: `R^T (p - t - c) + c`."""
        b, h, w = depth.shape
        rot, trans = transform_matrices(view)
        points = self.rotate(self.depth_to_3d_grid(depth).reshape(b, -1, 3) - trans, rot.transpose(1, 2))
        return points.reshape(b, h, w, 3)

    def inv_warped_2d_grid(self, depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Where each pixel of a view depth map lands in the canonical image, as a `grid_sample` grid."""
        return self.grid_3d_to_2d(self.inv_warped_3d_grid(depth, view))

    def get_normal_from_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """[B, H, W] depth -> [B, H, W, 3] unit normals (central differences; the 1-pixel border is (0, 0, 1))."""
        b, h, w = depth.shape
        grid = self.depth_to_3d_grid(depth)
        tu = grid[:, 1:-1, 2:] - grid[:, 1:-1, :-2]
        tv = grid[:, 2:, 1:-1] - grid[:, :-2, 1:-1]
        inner = torch.linalg.cross(tu, tv, dim=3)
        normal = F.pad(inner.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)
        border = torch.ones(h, w, dtype=torch.bool, device=depth.device)
        border[1:-1, 1:-1] = False
        z_axis = depth.new_tensor([0.0, 0.0, 1.0])
        normal = torch.where(border.view(1, h, w, 1), z_axis, normal)
        return normal / (normal.pow(2).sum(3, keepdim=True).sqrt() + EPS)

    # ------------------------------------------------------------------ rasterisation
    def rasterise(self, vertices: torch.Tensor, faces: torch.Tensor, size: tuple[int, int] | None = None
                  ) -> Rasterised:
        """Z-buffer [B, N, 3] camera-space vertices with [F, 3] faces into `size` (H, W) pixels."""
        h, w = size or (self.image_size, self.image_size)
        b = vertices.shape[0]
        faces = faces.long().to(vertices.device)
        n_faces = faces.shape[0]
        uv = self.project(vertices)  # [B, N, 2], differentiable
        with torch.no_grad():
            winner = self._zbuffer(uv.detach(), vertices[..., 2].detach(), faces, h, w)
        pixels = (winner >= 0).nonzero().squeeze(1)
        face = winner[pixels]  # flat (batch, face) index
        batch = face // n_faces
        corners = faces[face % n_faces]  # [P, 3]
        batch3 = batch.unsqueeze(1).expand_as(corners)
        puv = uv[batch3, corners]  # [P, 3, 2]
        pz = vertices[..., 2][batch3, corners]  # [P, 3]
        px = (pixels % w).to(uv.dtype)
        py = ((pixels // w) % h).to(uv.dtype)
        screen = _barycentric(puv[..., 0], puv[..., 1], px, py)  # [P, 3]
        inv_z = (screen / pz).sum(1)
        depth = 1.0 / inv_z
        weights = screen / pz * depth.unsqueeze(1)
        face_map = torch.full((b * h * w,), -1, dtype=torch.long, device=vertices.device)
        face_map[pixels] = face % n_faces
        return Rasterised(face=face_map, pixels=pixels, weights=weights, depth=depth)

    def _zbuffer(self, uv: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """[B*H*W] winning flat (batch * F + face) index per pixel, -1 where no face covers it.

        Candidates are enumerated row by row: each face's pixel rows, and on each row the pixels between the
        face's edge crossings (padded by a hair; the barycentric test decides), all ragged and vectorised.
        """
        b, n_faces = uv.shape[0], faces.shape[0]
        fu, fv, fz = (t[:, faces].reshape(-1, 3) for t in (uv[..., 0], uv[..., 1], z))  # [B*F, 3]
        tol = 1e-4
        y0 = fv.min(1).values.sub(tol).ceil().clamp(0, h)
        y1 = fv.max(1).values.add(tol).floor().clamp(-1, h - 1)
        rows = (y1 - y0 + 1).long().clamp(min=0)
        area = (fu[:, 1] - fu[:, 0]) * (fv[:, 2] - fv[:, 0]) - (fu[:, 2] - fu[:, 0]) * (fv[:, 1] - fv[:, 0])
        ok = (rows > 0) & (fz.min(1).values > self.near) & (area.abs() > 1e-12)
        sel = ok.nonzero().squeeze(1)
        zbuf = torch.full((b * h * w,), math.inf, dtype=uv.dtype, device=uv.device)
        found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for part in _chunks(rows[sel], self.chunk):
            face_ids = sel[part]
            row_face, row_off = _ragged(rows[face_ids])
            fid = face_ids[row_face]
            ry = y0[fid] + row_off
            xmin, xmax = _row_span(fu[fid], fv[fid], ry, tol)
            x0 = xmin.sub(tol).ceil().clamp(min=0)
            x1 = xmax.add(tol).floor().clamp(max=w - 1)
            count = (x1 - x0 + 1).long().clamp(min=0)
            for piece in _chunks(count, self.chunk):
                cand_row, cand_off = _ragged(count[piece])
                row = piece.start + cand_row
                f = fid[row]
                px, py = x0[row] + cand_off, ry[row]
                wts = _barycentric(fu[f], fv[f], px, py)
                depth = 1.0 / (wts / fz[f]).sum(-1)
                keep = (wts > -1e-6).all(-1) & (depth > self.near) & (depth < self.far)
                f, depth = f[keep], depth[keep]
                pixel = (f // n_faces) * (h * w) + py[keep].long() * w + px[keep].long()
                zbuf.scatter_reduce_(0, pixel, depth, reduce="amin")
                found.append((pixel, depth, f))
        winner = torch.full((b * h * w,), -1, dtype=torch.long, device=uv.device)
        for pixel, depth, face_id in found:
            best = depth <= zbuf[pixel]
            winner.scatter_reduce_(0, pixel[best], face_id[best], reduce="amax")
        return winner

    def render_depth(self, vertices: torch.Tensor, faces: torch.Tensor, size: tuple[int, int] | None = None
                     ) -> torch.Tensor:
        """[B, H, W] depth of the nearest surface, `far` where none (differentiable where drawn)."""
        h, w = size or (self.image_size, self.image_size)
        b = vertices.shape[0]
        if self.backend == "neural_renderer":
            return self._neural_renderer().render_depth(vertices, faces.int().unsqueeze(0).expand(b, -1, -1))
        ras = self.rasterise(vertices, faces, (h, w))
        flat = vertices.new_full((b * h * w,), self.far).index_put((ras.pixels,), ras.depth)
        return flat.view(b, h, w)

    def warp_canon_depth(self, canon_depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """The canonical depth mesh seen from `view`, clamped to the depth range +- half of it (Unsup3d)."""
        b, h, w = canon_depth.shape
        vertices = self.warped_3d_grid(canon_depth, view).reshape(b, -1, 3)
        depth = self.render_depth(vertices, grid_faces(h, w, canon_depth.device), (h, w))
        margin = (self.max_depth - self.min_depth) / 2
        return depth.clamp(self.min_depth - margin, self.max_depth + margin)

    def warp_canon_to_2d(self, canon_depth: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon depth [B, H, W], grid [B, H, W, 2]): `grid_sample(canon_image, grid)` is the image in the view."""
        recon_depth = self.warp_canon_depth(canon_depth, view)
        return recon_depth, self.inv_warped_2d_grid(recon_depth, view)

    def render_rgb(self, vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor,
                   size: tuple[int, int] | None = None, background: float = 1.0) -> torch.Tensor:
        """[B, C, H, W] image of a mesh with [B, N, C] vertex colours (perspective-correct interpolation)."""
        h, w = size or (self.image_size, self.image_size)
        b, _, c = colors.shape
        if self.backend == "neural_renderer":  # pragma: no cover - one colour per face (texture size 1)
            faces_b = faces.int().unsqueeze(0).expand(b, -1, -1)
            textures = colors[:, faces.long()].mean(2).view(b, faces.shape[0], 1, 1, 1, c)
            return self._neural_renderer().render_rgb(vertices, faces_b, textures)
        ras = self.rasterise(vertices, faces, (h, w))
        corners = faces.long().to(vertices.device)[ras.face[ras.pixels]]  # [P, 3]
        batch = (ras.pixels // (h * w)).unsqueeze(1).expand_as(corners)
        values = (colors[batch, corners] * ras.weights.unsqueeze(-1)).sum(1)  # [P, C]
        flat = colors.new_full((b * h * w, c), background).index_put((ras.pixels,), values)
        return flat.view(b, h, w, c).permute(0, 3, 1, 2)

    def render_yaw(self, image: torch.Tensor, depth: torch.Tensor, yaws: torch.Tensor | list[float],
                   view_before: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, C, H, W] renders of a canonical image on its depth mesh, turned by each yaw (radians)."""
        b, c, h, w = image.shape
        points = self.depth_to_3d_grid(depth).reshape(b, -1, 3)
        if view_before is not None:  # undo a view first (Unsup3d tilts faces by -6 degrees for display)
            rot, trans = transform_matrices(view_before)
            points = self.rotate(points - trans, rot.transpose(1, 2))
        faces = grid_faces(h, w, image.device)
        colors = image.permute(0, 2, 3, 1).reshape(b, -1, c)
        frames = []
        for yaw in torch.as_tensor(yaws, dtype=image.dtype).tolist():
            rot = rotation_matrix(image.new_tensor([[0.0, yaw, 0.0]])).expand(b, -1, -1)
            frames.append(self.render_rgb(self.rotate(points, rot), faces, colors, (h, w)))
        return torch.stack(frames, 1)

    # ------------------------------------------------------------------ optional backend
    def _neural_renderer(self):  # pragma: no cover - needs CUDA and the cuda-render extra
        if self._nr is None:
            import neural_renderer as nr

            K = torch.tensor([[[self.focal, 0.0, self.center], [0.0, self.focal, self.center], [0.0, 0.0, 1.0]]])
            self._nr = nr.Renderer(camera_mode="projection", light_intensity_ambient=1.0,
                                   light_intensity_directional=0.0, K=K.cuda(), R=torch.eye(3)[None].cuda(),
                                   t=torch.zeros(1, 3).cuda(), near=self.near, far=self.far,
                                   image_size=self.image_size, orig_size=self.image_size, fill_back=True,
                                   background_color=[1, 1, 1])
        return self._nr


def _barycentric(u: torch.Tensor, v: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentric weights [..., 3] of points (px, py) in triangles with corners u, v [..., 3]."""
    u0, u1, u2 = u.unbind(-1)
    v0, v1, v2 = v.unbind(-1)
    area = (u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0)
    w0 = ((u1 - px) * (v2 - py) - (u2 - px) * (v1 - py)) / area
    w1 = ((u2 - px) * (v0 - py) - (u0 - px) * (v2 - py)) / area
    return torch.stack([w0, w1, 1 - w0 - w1], -1)


def _ragged(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(owner, offset) for every item of a ragged enumeration: owner i repeated counts[i] times, offsets 0..c-1."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    offset = torch.arange(len(owner), device=counts.device) - starts[owner]
    return owner, offset


def _chunks(counts: torch.Tensor, limit: int) -> list[slice]:
    """Consecutive slices of `counts` whose sums stay within `limit` (a single larger item gets its own)."""
    if not len(counts):
        return []
    total = torch.cumsum(counts, 0)
    bounds, start = [], 0
    while start < len(counts):
        base = int(total[start - 1]) if start else 0
        stop = int(torch.searchsorted(total, base + limit, right=True))
        stop = max(stop, start + 1)
        bounds.append(slice(start, stop))
        start = stop
    return bounds


def _row_span(u: torch.Tensor, v: torch.Tensor, y: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max x where row `y` crosses triangles [R, 3] (u, v); horizontal edges are covered by the others."""
    ua, va = u, v
    ub, vb = u.roll(-1, 1), v.roll(-1, 1)
    dv = vb - va
    yy = y.unsqueeze(1)
    crosses = (yy >= torch.minimum(va, vb) - tol) & (yy <= torch.maximum(va, vb) + tol) & (dv.abs() > 1e-12)
    t = ((yy - va) / torch.where(dv.abs() > 1e-12, dv, torch.ones_like(dv))).clamp(0, 1)
    x = ua + t * (ub - ua)
    big = torch.finfo(u.dtype).max
    xmin = torch.where(crosses, x, torch.full_like(x, big)).min(1).values
    xmax = torch.where(crosses, x, torch.full_like(x, -big)).max(1).values
    return xmin, xmax
