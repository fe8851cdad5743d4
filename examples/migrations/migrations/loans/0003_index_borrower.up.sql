-- dbctl:no-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS loans_borrower ON loans (borrower);
