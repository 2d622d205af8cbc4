-- A browser-viewable PNG of each study's image (DICOM rendered with its
-- window, long side <= 1024 px), made by the model server during inference
-- and stored in S3 by content (`previews/<sha256>.png`).
ALTER TABLE studies ADD COLUMN preview_key text CHECK (length(preview_key) BETWEEN 1 AND 1024);
