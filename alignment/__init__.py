"""Face detection, landmarks, FFHQ alignment, quality filters, dedup and attribute compositing."""
