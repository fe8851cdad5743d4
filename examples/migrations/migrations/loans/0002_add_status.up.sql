ALTER TABLE loans ADD COLUMN status text DEFAULT 'open';
