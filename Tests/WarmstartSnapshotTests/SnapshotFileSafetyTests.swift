import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartSnapshot

/// A snapshot in a directory every user can write (/dev/shm, the default without hugepages) is
/// untrusted until proven otherwise: a symbolic link planted at its path, a file another user owns
/// or can write, or a planted temporary name must never be opened, mapped or written through.
final class SnapshotFileSafetyTests: XCTestCase {
    var dir: ScratchDir!
    var path: String!

    override func setUpWithError() throws {
        dir = ScratchDir(under: "/dev/shm")
        path = dir.file("s.snap")
        try SnapshotWriter.create(path: path, config: Fixture.small)
    }

    override func tearDown() { dir = nil }

    func assertRefused(_ path: String, mentions words: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SnapshotFile.open(path: path), file: file, line: line) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(path), "the error names the file: \(text)", file: file, line: line)
            for w in words { XCTAssertTrue(text.contains(w), "the error says '\(w)': \(text)", file: file, line: line) }
        }
    }

    func testSymbolicLinkAtTheSnapshotPathIsRefused() throws {
        let link = dir.file("link.snap")
        XCTAssertEqual(symlink(path, link), 0)
        assertRefused(link, mentions: ["symbolic link"])
    }

    func testFileWritableByOthersIsRefused() throws {
        XCTAssertEqual(chmod(path, 0o666), 0)
        assertRefused(path, mentions: ["writable by group or others", "chmod 600"])
        XCTAssertEqual(chmod(path, 0o620), 0)
        assertRefused(path, mentions: ["writable by group or others"])
        XCTAssertEqual(chmod(path, 0o600), 0)
        XCTAssertNoThrow(try SnapshotFile.open(path: path))
    }

    func testFileOwnedByAnotherUserIsRefused() throws {
        try XCTSkipUnless(geteuid() == 0, "needs root to give the file away")
        XCTAssertEqual(chown(path, 65534, 65534), 0)
        assertRefused(path, mentions: ["owned by uid 65534", "uid \(geteuid())", "--snapshot"])
    }

    /// A name planted where the writer puts its temporary file (a symbolic link to a file the
    /// attacker wants overwritten) is neither followed nor removed: the writer uses another name.
    func testPlantedTemporaryNameIsNotFollowed() throws {
        let victim = dir.file("victim")
        try Data("precious".utf8).write(to: URL(fileURLWithPath: victim))
        let target = dir.file("new.snap")
        let planted = "\(target).tmp-\(getpid())"
        XCTAssertEqual(symlink(victim, planted), 0)
        try SnapshotWriter.create(path: target, config: Fixture.small)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: victim)), Data("precious".utf8), "the victim was written through the link")
        var st = stat()
        XCTAssertEqual(lstat(planted, &st), 0, "the planted name is left alone")
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFLNK)
        XCTAssertEqual(lstat(target, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFREG, "the snapshot is a regular file, not the planted link")
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertNoThrow(try SnapshotFile.open(path: target))
    }
}
