#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Free TCP ports on 127.0.0.1 (bound, read back, released).
public func freePorts(_ count: Int) -> [Int] {
    var sockets: [Int32] = []
    var ports: [Int] = []
    for _ in 0..<count {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        ports.append(Int(UInt16(bigEndian: address.sin_port)))
        sockets.append(fd)
    }
    for fd in sockets { close(fd) }
    return ports
}

/// A free port `p` on 127.0.0.1 whose `p + offset` is free too (rtp-llm clients find FlexLB's
/// gRPC at the HTTP port + 2); nil when none was found in 200 tries.
public func freePortWithNeighbour(offset: Int) -> (Int, Int)? {
    for _ in 0..<200 {
        let port = freePorts(1)[0]
        guard port + offset <= 65_535 else { continue }
        if isFree(port + offset) { return (port, port + offset) }
    }
    return nil
}

/// The first of `length` consecutive free ports on 127.0.0.1 (engines that take every other
/// port); nil when none was found in 200 tries.
public func freePortRun(length: Int) -> Int? {
    for _ in 0..<200 {
        let port = freePorts(1)[0]
        guard port + length - 1 <= 65_535 else { continue }
        if (1..<length).allSatisfy({ isFree(port + $0) }) { return port }
    }
    return nil
}

private func isFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let bound = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    return bound == 0
}
