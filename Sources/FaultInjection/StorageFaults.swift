import CFaultVFS

/// Storage faults for fault-injection runs, through a SQLite VFS that wraps the default one and
/// remembers every write not yet fsynced (see `fault_vfs.h`).
///
/// Nothing here is active unless ``install()`` ran before the node opened its database; a
/// production node never calls it (`fault_injection` is off by default).
public enum StorageFaults {
    public enum DiskMode: String, Sendable, CaseIterable {
        /// Writes and fsyncs succeed.
        case healthy
        /// Every write fails with SQLITE_FULL.
        case full
        /// Writes, truncations and fsyncs fail with I/O errors; a failed fsync loses the file's
        /// unsynced writes, as the kernel may drop the dirty pages.
        case ioError = "io_error"

        var code: Int32 {
            switch self {
            case .healthy: 0
            case .full: 1
            case .ioError: 2
            }
        }
    }

    /// Makes the fault VFS SQLite's default for every database opened afterwards.
    public struct InstallError: Error, CustomStringConvertible {
        public var code: Int32
        public var description: String { "cannot install the fault-injection VFS (SQLite code \(code))" }
    }

    public static func install() throws(InstallError) {
        let code = fulcrum_fault_vfs_install()
        guard code == 0 else { throw InstallError(code: code) }
    }

    /// Every fsync first sleeps this long (a slow disk); 0 for none.
    public static func setSyncDelay(milliseconds: Int) {
        fulcrum_fault_vfs_set_sync_delay_ms(Int32(clamping: milliseconds))
    }

    public static func setDiskMode(_ mode: DiskMode) {
        fulcrum_fault_vfs_set_disk_mode(mode.code)
    }

    /// Bytes written since their file's last fsync: what a power loss now would undo.
    public static var unsyncedBytes: Int64 { fulcrum_fault_vfs_unsynced_bytes() }

    /// Successful fsyncs since the VFS was installed.
    public static var syncs: Int64 { fulcrum_fault_vfs_syncs() }

    /// A power loss: undoes every write that was never fsynced and ends the process with
    /// `status` at once (no clean shutdown, no flush).
    public static func powerLoss(status: Int32 = 137) -> Never {
        fulcrum_fault_vfs_power_loss(status)
    }
}
