/// How long a test waits for the polling threads before it fails (generous: the machine may be
/// shared and slow).
let testDeadline: Double = 60
