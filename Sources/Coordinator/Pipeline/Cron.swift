import Foundation

/// A five-field cron expression as crontab(5) reads it: minute (0–59), hour (0–23), day of
/// month (1–31), month (1–12 or `jan`–`dec`), day of week (0–7 or `sun`–`sat`, 0 and 7 both
/// Sunday). A field is `*`, a number or name, a range `a-b`, any of those with a step (`*/15`,
/// `1-10/3`, `5/10` meaning `5-max/10`), or a comma-separated list of them. When both the day
/// of month and the day of week are restricted (their field does not start with `*`), a day
/// matching either one is due, as in crontab(5); otherwise a day must match both (as cron
/// does: `*/2 * 1` is Mondays that are odd days of the month). The shortcuts `@yearly` (`@annually`),
/// `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly` stand for their expressions.
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    /// The expression as written (a shortcut stays a shortcut).
    public let description: String
    let minutes: UInt64
    let hours: UInt64
    let days: UInt64
    let months: UInt64
    /// Bit 0 is Sunday (7 is folded into it).
    let weekdays: UInt64
    let daysRestricted: Bool
    let weekdaysRestricted: Bool

    static let shortcuts: [String: String] = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let weekdayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Parses `text`; the error says what is wrong, for a person reading the file.
    public init(_ text: String) throws(CronError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        description = trimmed
        var expression = trimmed
        if trimmed.hasPrefix("@") {
            guard let expanded = Self.shortcuts[trimmed.lowercased()] else {
                throw CronError("'\(trimmed)' is not a shortcut Heddle knows; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly, or five fields")
            }
            expression = expanded
        }
        let fields = expression.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw CronError("'\(trimmed)' has \(fields.count) field\(fields.count == 1 ? "" : "s"); a cron expression has five: minute, hour, day of month, month, day of week")
        }
        minutes = try Self.field(fields[0], "minute", 0...59)
        hours = try Self.field(fields[1], "hour", 0...23)
        days = try Self.field(fields[2], "day of month", 1...31)
        months = try Self.field(fields[3], "month", 1...12, names: Self.monthNames, firstName: 1)
        let weekdays = try Self.field(fields[4], "day of week", 0...7, names: Self.weekdayNames, firstName: 0)
        self.weekdays = (weekdays | (weekdays >> 7)) & 0x7F
        daysRestricted = !fields[2].hasPrefix("*")
        weekdaysRestricted = !fields[4].hasPrefix("*")
    }

    /// One field's values as bits (bit n: value n).
    static func field(_ text: String, _ name: String, _ range: ClosedRange<Int>, names: [String] = [],
                      firstName: Int = 0) throws(CronError) -> UInt64 {
        func value(_ item: Substring) throws(CronError) -> Int {
            if item.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(item) {
                guard range.contains(number) else {
                    throw CronError("\(number) is out of range for the \(name) (\(range.lowerBound)–\(range.upperBound))")
                }
                return number
            }
            if let index = names.firstIndex(of: item.lowercased()) { return index + firstName }
            let named = names.isEmpty ? "" : ", or a name such as \(names[0])"
            throw CronError("'\(item)' is not a \(name) (a number \(range.lowerBound)–\(range.upperBound)\(named))")
        }
        var bits: UInt64 = 0
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw CronError("the \(name) field '\(text)' has an empty item") }
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw CronError("the \(name) item '\(item)' has more than one '/'") }
            var step = 1
            if parts.count == 2 {
                guard parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), let given = Int(parts[1]), given >= 1, given <= range.upperBound else {
                    throw CronError("the step of the \(name) item '\(item)' is not a number from 1 to \(range.upperBound)")
                }
                step = given
            }
            let base = parts[0]
            var low: Int, high: Int
            if base == "*" {
                (low, high) = (range.lowerBound, range.upperBound)
            } else if let dash = base.firstIndex(of: "-") {
                low = try value(base[..<dash])
                high = try value(base[base.index(after: dash)...])
                guard low <= high else {
                    throw CronError("the \(name) range '\(base)' runs backwards; write it from the lower value to the higher")
                }
            } else {
                low = try value(base)
                high = parts.count == 2 ? range.upperBound : low  // `5/10`: from 5 to the end, every 10
            }
            for number in stride(from: low, through: high, by: step) { bits |= 1 << UInt64(number) }
        }
        return bits
    }

    /// Whether a day (its day of month, month 1–12, and day of week with 0 Sunday) is due.
    func matchesDay(day: Int, month: Int, weekday: Int) -> Bool {
        guard months & (1 << UInt64(month)) != 0 else { return false }
        let byDay = days & (1 << UInt64(day)) != 0
        let byWeekday = weekdays & (1 << UInt64(weekday)) != 0
        // As cron itself decides: either day field starting with `*` makes it "and" (a plain
        // `*` matches every day, so the other field decides; `*/2` with a weekday is both).
        return daysRestricted && weekdaysRestricted ? byDay || byWeekday : byDay && byWeekday
    }

    static func values(_ bits: UInt64, _ range: ClosedRange<Int>) -> [Int] {
        range.filter { bits & (1 << UInt64($0)) != 0 }
    }

    /// The first due minute strictly after `date`, in `timeZone`'s local time; nil when none
    /// comes within nine years (`0 0 30 2 *`: February has no 30th). A local time that a
    /// daylight-saving change skips is not due that day; one it repeats is due once, at its
    /// first occurrence.
    public func next(after date: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let start = Date(timeIntervalSince1970: (date.timeIntervalSince1970 / 60).rounded(.down) * 60 + 60)
        let first = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: start)
        let hourList = Self.values(hours, 0...23)
        let minuteList = Self.values(minutes, 0...59)
        guard var day = calendar.date(from: DateComponents(year: first.year, month: first.month, day: first.day, hour: 12)) else {
            return nil
        }
        for index in 0..<(366 * 9) {
            let parts = calendar.dateComponents([.year, .month, .day, .weekday], from: day)
            if let year = parts.year, let month = parts.month, let dayOfMonth = parts.day, let weekday = parts.weekday,
               matchesDay(day: dayOfMonth, month: month, weekday: weekday - 1) {
                for hour in hourList {
                    if index == 0, hour < first.hour ?? 0 { continue }
                    for minute in minuteList {
                        if index == 0, hour == first.hour, minute < first.minute ?? 0 { continue }
                        let wanted = DateComponents(year: year, month: month, day: dayOfMonth, hour: hour, minute: minute)
                        guard let due = calendar.date(from: wanted) else { continue }
                        let got = calendar.dateComponents([.day, .hour, .minute], from: due)
                        // A local time that does not exist that day comes back moved: not due.
                        guard got.day == dayOfMonth, got.hour == hour, got.minute == minute, due >= start else { continue }
                        return due
                    }
                }
            }
            guard let following = calendar.date(byAdding: .day, value: 1, to: day) else { return nil }
            day = following
        }
        return nil
    }

    /// The latest due minute after `after` and at or before `now`; nil when none is. Used to
    /// start a schedule once for every due time it missed together (a coordinator that was
    /// down), not once per missed time.
    public func latest(after: Date, atOrBefore now: Date, in timeZone: TimeZone) -> Date? {
        guard var due = next(after: after, in: timeZone), due <= now else { return nil }
        // Far behind: a due time in the last two days, if one is, is where the latest is found.
        if now.timeIntervalSince(due) > 2 * 86_400, let recent = next(after: now.addingTimeInterval(-2 * 86_400), in: timeZone),
           recent <= now {
            due = recent
        }
        while let following = next(after: due, in: timeZone), following <= now { due = following }
        return due
    }
}

public struct CronError: Error, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
}
