// Ledger's Node SDK: a client that batches, gzips and retries in the background, pino and winston
// transports (`ledger-sdk/pino`, `ledger-sdk/winston`), and a query helper.
export { Client, LedgerError, exceptionOf } from './client.js';
export type { ClientOptions, Log, QueryFilters, Stats } from './client.js';
