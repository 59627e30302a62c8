import CNetShim
import Foundation

/// The gateway's claim on its socket path (contract §1, §9, §13).
///
/// Starting: a path no Unix socket address can hold is refused with a clear message; a file
/// that is not a socket is refused and left alone; a socket someone listens on, however busy,
/// is refused (probing it never blocks); a stale socket is replaced. Right after `bind` the
/// new file's device and inode are recorded, and at exit the file is removed only while the
/// path still names that file: a gateway whose file was replaced never deletes its successor's.
public struct SocketPathOwner: Sendable {
    public let path: String
    let device: UInt64
    let inode: UInt64

    /// `sun_path` is 108 bytes, one of them the terminating NUL.
    public static let maxPathBytes = 107

    /// How long the probe of an existing socket file may wait for an answer.
    static let probeTimeoutMS: Int32 = 300

    /// What is wrong with `path` as a Unix socket path, or nil when nothing is.
    public static func problem(with path: String) -> String? {
        let length = path.utf8.count
        if length == 0 { return "the socket path is empty" }
        if path.utf8.contains(0) { return "the socket path contains a NUL byte" }
        if length > maxPathBytes {
            return "the socket path is \(length) bytes long; a Unix socket path holds at most \(maxPathBytes) bytes: \(path)"
        }
        return nil
    }

    /// Prepares `path` and listens there; the descriptor and the claim to remove the file later.
    static func listen(at path: String, backlog: Int32, mode: UInt32) throws -> (fd: Int32, owner: SocketPathOwner) {
        if let problem = problem(with: path) { throw GatewayStartError(description: problem) }
        var existing = stat()
        if lstat(path, &existing) == 0 {
            guard (existing.st_mode & S_IFMT) == S_IFSOCK else {
                throw GatewayStartError(description: "\(path) exists and is not a socket; refusing to replace it")
            }
            let probe = tcpgw_unix_probe(path, probeTimeoutMS)
            if probe > 0 {
                throw GatewayStartError(description: "another process is already listening on \(path); refusing to replace it")
            }
            if probe < 0 {
                throw GatewayStartError(
                    description: "cannot tell whether anything listens on \(path): \(Errno.message(-probe)) (\(Errno.name(-probe))); refusing to replace it")
            }
            // Nobody answers: a stale socket from a gateway that did not clean up. Only that
            // file is removed, not one put there since it was looked at.
            if let still = identity(of: path), still == (UInt64(existing.st_dev), UInt64(existing.st_ino)) {
                unlink(path)
            }
        }
        let fd = tcpgw_unix_listen(path, backlog, mode)
        guard fd >= 0 else {
            throw GatewayStartError(description: "cannot listen on \(path): \(Errno.message(-fd)) (\(Errno.name(-fd)))")
        }
        guard let created = identity(of: path) else {
            _ = tcpgw_close(fd)
            throw GatewayStartError(description: "the socket file \(path) vanished right after it was created")
        }
        return (fd, SocketPathOwner(path: path, device: created.device, inode: created.inode))
    }

    /// Removes the socket file if the path still names the file this gateway created.
    @discardableResult
    public func removeIfStillOurs() -> Bool {
        guard let now = Self.identity(of: path), now == (device, inode) else { return false }
        return unlink(path) == 0
    }

    /// Device and inode of the socket file at `path` (not following a symbolic link).
    private static func identity(of path: String) -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }
}
