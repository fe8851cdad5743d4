-- dbctl:no-transaction
DROP INDEX CONCURRENTLY IF EXISTS loans_borrower;
