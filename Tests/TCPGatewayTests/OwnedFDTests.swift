import Glibc
import XCTest

@testable import TCPGateway

/// Single ownership of descriptors: dropping closes, `release()` gives the number away, and
/// passed descriptors nobody took close with their batch. Each check looks at the number right
/// after the drop, before anything else can open a descriptor that reuses it.
final class OwnedFDTests: XCTestCase {
    private func openDevNull(file: StaticString = #filePath, line: UInt = #line) throws -> Int32 {
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            XCTFail("open /dev/null: errno \(errno)", file: file, line: line)
            throw SystemError(errno: errno, syscall: "open")
        }
        return fd
    }

    /// Whether `fd` is an open descriptor (F_GETFD fails with EBADF otherwise).
    private func isOpen(_ fd: Int32, file: StaticString = #filePath, line: UInt = #line) -> Bool {
        if fcntl(fd, F_GETFD) >= 0 { return true }
        XCTAssertEqual(errno, EBADF, "fcntl(\(fd), F_GETFD)", file: file, line: line)
        return false
    }

    private func drop(_ owned: consuming OwnedFD) {}

    private func drop(_ passed: consuming PassedDescriptors) {}

    func testDroppingCloses() throws {
        let fd = try openDevNull()
        do {
            let owned = OwnedFD(adopting: fd)
            let raw = owned.raw
            XCTAssertEqual(raw, fd)
            XCTAssertTrue(isOpen(raw))
        }
        XCTAssertFalse(isOpen(fd), "closed at the end of the owner's scope")
    }

    func testConsumingMovesOwnership() throws {
        let fd = try openDevNull()
        let owned = OwnedFD(adopting: fd)
        let moved = owned
        XCTAssertTrue(isOpen(fd), "a move does not close")
        drop(moved)
        XCTAssertFalse(isOpen(fd))
    }

    func testOptionalTakeHandsItOver() throws {
        let fd = try openDevNull()
        var slot: OwnedFD? = OwnedFD(adopting: fd)
        guard let taken = slot.take() else { return XCTFail("take() gave nothing") }
        XCTAssertTrue(slot == nil)
        XCTAssertTrue(isOpen(fd))
        drop(taken)
        XCTAssertFalse(isOpen(fd))
    }

    func testExplicitClose() throws {
        let fd = try openDevNull()
        OwnedFD(adopting: fd).close()
        XCTAssertFalse(isOpen(fd))
    }

    func testReleaseDoesNotClose() throws {
        let fd = try openDevNull()
        let raw = OwnedFD(adopting: fd).release()
        XCTAssertEqual(raw, fd)
        XCTAssertTrue(isOpen(fd), "released: the caller answers for it now")
        XCTAssertEqual(Glibc.close(raw), 0, "and closes it exactly once")
    }

    func testPassedDescriptorsCloseWhatNobodyTook() throws {
        let fds = [try openDevNull(), try openDevNull(), try openDevNull()]
        do {
            var passed = PassedDescriptors(adopting: fds)
            XCTAssertEqual(passed.count, 3)
            let none = passed.takeOnly() == nil
            XCTAssertTrue(none, "more than one came: none is taken")
            XCTAssertEqual(passed.count, 3, "and they stay owned")
            for fd in fds { XCTAssertTrue(isOpen(fd)) }
        }
        for fd in fds { XCTAssertFalse(isOpen(fd), "fd \(fd) closed with the batch") }
    }

    func testPassedDescriptorsTakeOnly() throws {
        let fd = try openDevNull()
        var passed = PassedDescriptors(adopting: [-1, fd])
        XCTAssertEqual(passed.count, 1, "negative numbers are no descriptors")
        guard let taken = passed.takeOnly() else { return XCTFail("exactly one came: takeOnly() takes it") }
        let raw = taken.raw
        XCTAssertEqual(raw, fd)
        XCTAssertEqual(passed.count, 0)
        drop(passed)
        XCTAssertTrue(isOpen(fd), "the batch no longer owns what was taken")
        drop(taken)
        XCTAssertFalse(isOpen(fd))
    }

    func testPassedDescriptorsTakeAll() throws {
        let fds = [try openDevNull(), try openDevNull()]
        var passed = PassedDescriptors(adopting: fds)
        let all = passed.takeAll()
        XCTAssertEqual(passed.count, 0)
        XCTAssertEqual(all.count, 2)
        drop(passed)
        for fd in fds { XCTAssertTrue(isOpen(fd), "moved out before the drop") }
        drop(all)
        for fd in fds { XCTAssertFalse(isOpen(fd)) }
    }

    func testEmptyPassedDescriptors() {
        var passed = PassedDescriptors(adopting: [])
        XCTAssertEqual(passed.count, 0)
        let none = passed.takeOnly() == nil
        XCTAssertTrue(none)
    }
}
