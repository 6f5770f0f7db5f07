#ifndef FULCRUM_FAULT_VFS_H
#define FULCRUM_FAULT_VFS_H

/// A SQLite VFS for fault injection, wrapping the default one (as SQLite's own crash tests do).
///
/// It remembers, per open database, WAL or journal file, what every write since the file's
/// last successful fsync overwrote. So it can model a power loss exactly: every write that was
/// never fsynced is undone, and the process dies. It can also delay every fsync (a slow disk),
/// fail every write with SQLITE_FULL (a full disk), or fail writes and fsyncs with I/O errors,
/// a failed fsync dropping the file's unsynced writes as Linux may do.
///
/// Test only: `fulcrum serve` installs it when `fault_injection` is set.

/// Registers the VFS as SQLite's default; later opens go through it. Idempotent; returns an
/// SQLite result code.
int fulcrum_fault_vfs_install(void);

/// Sleeps this long before every fsync (0: no delay).
void fulcrum_fault_vfs_set_sync_delay_ms(int milliseconds);

/// 0: healthy; 1: every write fails with SQLITE_FULL; 2: writes, truncations and fsyncs fail
/// with I/O errors.
void fulcrum_fault_vfs_set_disk_mode(int mode);

/// Bytes written to tracked files since their last fsync, all files together.
long long fulcrum_fault_vfs_unsynced_bytes(void);

/// Successful fsyncs so far.
long long fulcrum_fault_vfs_syncs(void);

/// A power loss: undoes every write not yet fsynced, then ends the process at once with
/// `status`. Never returns.
void fulcrum_fault_vfs_power_loss(int status) __attribute__((noreturn));

#endif
