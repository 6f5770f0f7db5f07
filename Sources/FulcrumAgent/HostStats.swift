public import FulcrumAPI
import Foundation

/// What `fulcrum agent` reports of its host: load per CPU core (between two samples of
/// `/proc/stat`), memory, disk, and GPUs through `nvidia-smi` when it is installed.
public struct HostStats: Sendable, Equatable, Codable {
    public struct GPU: Sendable, Equatable, Codable {
        public var utilization: Double
        public var memoryTotalBytes: UInt64
        public var memoryUsedBytes: UInt64
    }

    public var coreLoads: [Double]
    public var memoryTotalBytes: UInt64
    public var memoryUsedBytes: UInt64
    public var diskTotalBytes: UInt64
    public var diskUsedBytes: UInt64
    public var gpus: [GPU]

    /// Busy and total jiffies per core from `/proc/stat` text.
    public static func cpuTimes(procStat text: String) -> [(busy: UInt64, total: UInt64)] {
        text.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("cpu"), let first = line.split(separator: " ").first, first.count > 3 else { return nil }
            let fields = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
            guard fields.count >= 4 else { return nil }
            let total = fields.reduce(0, +)
            let idle = fields[3] + (fields.count > 4 ? fields[4] : 0)
            return (total - idle, total)
        }
    }

    /// Load per core between two samples, each in [0, 1].
    public static func coreLoads(from before: [(busy: UInt64, total: UInt64)], to after: [(busy: UInt64, total: UInt64)]) -> [Double] {
        zip(before, after).map { old, new in
            let total = new.total > old.total ? new.total - old.total : 0
            let busy = new.busy > old.busy ? new.busy - old.busy : 0
            return total == 0 ? 0 : min(1, Double(busy) / Double(total))
        }
    }

    /// (total, used) bytes from `/proc/meminfo` text (used = total − available).
    public static func memory(procMeminfo text: String) -> (total: UInt64, used: UInt64) {
        var values: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let value = UInt64(parts[1]) else { continue }
            values[String(parts[0].dropLast())] = value * 1_024
        }
        let total = values["MemTotal"] ?? 0
        let available = values["MemAvailable"] ?? values["MemFree"] ?? 0
        return (total, total > available ? total - available : 0)
    }

    /// GPUs from `nvidia-smi --query-gpu=utilization.gpu,memory.total,memory.used --format=csv,noheader,nounits`.
    public static func gpus(nvidiaSMI text: String) -> [GPU] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == 3, let utilization = Double(fields[0]), let total = UInt64(fields[1]), let used = UInt64(fields[2]) else {
                return nil
            }
            return GPU(utilization: min(1, max(0, utilization / 100)), memoryTotalBytes: total << 20, memoryUsedBytes: used << 20)
        }
    }

    /// Reads the host now; `previous` is the last `/proc/stat` sample (core loads are measured
    /// between the two). Returns the stats and the new sample.
    public static func read(previous: [(busy: UInt64, total: UInt64)]?, diskPath: String) -> (HostStats, [(busy: UInt64, total: UInt64)]) {
        let stat = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8)) ?? ""
        let sample = cpuTimes(procStat: stat)
        let loads = previous.map { coreLoads(from: $0, to: sample) } ?? sample.map { $0.total == 0 ? 0 : Double($0.busy) / Double($0.total) }
        let memory = memory(procMeminfo: (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? "")
        var disk = statvfs()
        var diskTotal: UInt64 = 0, diskUsed: UInt64 = 0
        if statvfs(diskPath, &disk) == 0 {
            diskTotal = UInt64(disk.f_blocks) * UInt64(disk.f_frsize)
            diskUsed = diskTotal - min(diskTotal, UInt64(disk.f_bavail) * UInt64(disk.f_frsize))
        }
        let stats = HostStats(
            coreLoads: loads, memoryTotalBytes: memory.total, memoryUsedBytes: memory.used,
            diskTotalBytes: diskTotal, diskUsedBytes: diskUsed, gpus: readGPUs()
        )
        return (stats, sample)
    }

    /// GPUs through nvidia-smi; none (cleanly) when it is not installed or fails.
    static func readGPUs() -> [GPU] {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        guard let tool = paths.map({ "\($0)/nvidia-smi" }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return []
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = ["--query-gpu=utilization.gpu,memory.total,memory.used", "--format=csv,noheader,nounits"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return []
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return [] }
        return gpus(nvidiaSMI: String(decoding: data, as: UTF8.self))
    }
}

extension HostStats {
    /// The heartbeat that reports these stats (`POST /v1/workers/{id}/heartbeat`).
    public var heartbeat: Heartbeat {
        Heartbeat(resources: Heartbeat.Resources(
            coreLoads: coreLoads, memoryTotalBytes: Int64(clamping: memoryTotalBytes), memoryUsedBytes: Int64(clamping: memoryUsedBytes),
            diskTotalBytes: Int64(clamping: diskTotalBytes), diskUsedBytes: Int64(clamping: diskUsedBytes),
            gpus: gpus.map {
                Heartbeat.Resources.GPU(
                    utilization: $0.utilization, memoryTotalBytes: Int64(clamping: $0.memoryTotalBytes),
                    memoryUsedBytes: Int64(clamping: $0.memoryUsedBytes)
                )
            }
        ))
    }
}
