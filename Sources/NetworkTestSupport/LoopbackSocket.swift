#if canImport(Glibc)
import Glibc
#endif

public struct LoopbackConnectError: Error, CustomStringConvertible {
    public let port: Int
    public var description: String { "cannot connect to 127.0.0.1:\(port)" }
}

/// A blocking TCP socket connected to 127.0.0.1:`port`, for tests that write requests byte for
/// byte (no client library in between). The caller closes it.
public func connectLoopback(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw LoopbackConnectError(port: port)
    }
    return fd
}
