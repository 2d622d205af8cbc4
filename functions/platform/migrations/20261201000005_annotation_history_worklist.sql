-- Annotation edits keep their history, the worklist sorts by priority, and a
-- run records whether its model was trained.

-- Every state an annotation went through: created, each update (the values
-- after it) and its deletion (the values it had), with who and when. The
-- annotation itself may be gone (deleted): no foreign key to it.
CREATE TYPE annotation_change AS ENUM ('created', 'updated', 'deleted');
CREATE TABLE annotation_revisions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    annotation_id bigint            NOT NULL,
    study_id      bigint            NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    change        annotation_change NOT NULL,
    label_set     text              NOT NULL,
    label         text              NOT NULL,
    x_min         real CHECK (x_min >= 0),
    y_min         real CHECK (y_min >= 0),
    width         real CHECK (width > 0),
    height        real CHECK (height > 0),
    changed_by    text              NOT NULL CHECK (length(changed_by) BETWEEN 1 AND 128),
    changed_at    timestamptz       NOT NULL DEFAULT now(),
    CHECK ((x_min IS NULL) = (y_min IS NULL)
       AND (x_min IS NULL) = (width IS NULL)
       AND (x_min IS NULL) = (height IS NULL))
);
CREATE INDEX annotation_revisions_study_idx ON annotation_revisions (study_id, annotation_id, id);

-- Existing annotations start their history as created by their author.
INSERT INTO annotation_revisions (annotation_id, study_id, change, label_set, label, x_min, y_min, width, height, changed_by, changed_at)
SELECT id, study_id, 'created', label_set, label, x_min, y_min, width, height, author, created_at FROM annotations;

-- The worklist's priority: the highest probability among the latest run's
-- positive findings (0 when none is positive, NULL before inference). Kept
-- on the study, written in the inference transaction, so the sort is an
-- index scan.
ALTER TABLE studies ADD COLUMN priority real CHECK (priority BETWEEN 0 AND 1),
                    -- The label that probability belongs to (NULL when none is positive).
                    ADD COLUMN priority_label text CHECK (length(priority_label) BETWEEN 1 AND 128);
CREATE INDEX studies_owner_priority_idx ON studies (owner, priority DESC NULLS LAST, created_at, id);

UPDATE studies s SET priority = COALESCE(p.probability, 0), priority_label = p.label
  FROM (SELECT DISTINCT ON (r.study_id) r.study_id, top.probability, top.label
          FROM inference_runs r
          LEFT JOIN LATERAL (SELECT f.probability, f.label FROM findings f
                              WHERE f.inference_run_id = r.id AND f.source = 'model'
                                AND f.probability >= COALESCE((r.thresholds ->> f.label)::real, 0.5)
                              ORDER BY f.probability DESC, f.label LIMIT 1) top ON true
         ORDER BY r.study_id, r.created_at DESC, r.id DESC) p
 WHERE s.id = p.study_id;

-- Whether the run's weights were trained (false: generated weights whose
-- numbers mean nothing clinically); NULL for runs recorded before this.
ALTER TABLE inference_runs ADD COLUMN model_trained boolean;
