"""The functions analysts' SQL may call: an explicit allow-list of pure ClickHouse functions —
the result depends only on the arguments and the rows the query reads. Left out on purpose:
whatever reads outside the query's rows or reveals the server (`file`, `dictGet*`, `joinGet`,
`getSetting`, `hostName`, …), takes a function or table name as a string (`arrayReduce`, …),
`sleep`/`throwIf`, and every table function.

sqlglot turns many calls into typed nodes (`toStartOfHour(ts)` → `TimestampTrunc`): a node is
allowed when the name it records is on the list (aggregates with their combinators), and a
typed node's class is one an allowed name or piece of syntax parses to — classes derived by
parsing the lists below with sqlglot itself, so a class some other function parses to is never
allowed by accident.
"""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "SCALAR_FUNCTIONS",
    "analyst_function_allowed",
    "function_name",
]

#: Aggregate and window functions (each may carry the combinators below).


def _lower_words(text: str) -> frozenset[str]:
    """The whitespace-separated names in `text`, lower-cased (lists read better as prose)."""
    return frozenset(word.lower() for word in text.split())


AGGREGATE_FUNCTIONS: frozenset[str] = _lower_words(
    """
    count sum avg min max any anyLast anyHeavy argMin argMax avgWeighted
    uniq uniqExact uniqCombined uniqCombined64 uniqHLL12 uniqUpTo countDistinct
    quantile quantiles quantileExact quantilesExact quantileExactLow quantileExactHigh
    quantileExactWeighted quantilesExactWeighted quantileTDigest quantilesTDigest
    quantileTDigestWeighted quantilesTDigestWeighted quantileTiming quantilesTiming
    quantileDeterministic quantilesDeterministic quantileBFloat16 quantilesBFloat16
    quantileDD quantilesDD quantileGK quantilesGK quantileInterpolatedWeighted
    median medianExact medianTDigest medianTiming medianDeterministic
    topK topKWeighted approx_top_k approx_top_sum
    groupArray groupArrayLast groupArraySample groupArraySorted groupUniqArray
    groupArrayMovingAvg groupArrayMovingSum groupArrayIntersect groupConcat
    groupBitAnd groupBitOr groupBitXor
    sumKahan sumWithOverflow sumMap minMap maxMap sumCount
    varPop varSamp stddevPop stddevSamp covarPop covarSamp corr
    varPopStable varSampStable stddevPopStable stddevSampStable covarPopStable covarSampStable
    corrStable skewPop skewSamp kurtPop kurtSamp entropy
    simpleLinearRegression histogram retention windowFunnel
    sequenceMatch sequenceCount deltaSum deltaSumTimestamp
    exponentialMovingAverage intervalLengthSum boundingRatio
    singleValueOrNull any_respect_nulls anyLast_respect_nulls
    first_value last_value nth_value
    row_number rank dense_rank denseRank percent_rank percentRank cume_dist ntile
    lag lead lagInFrame leadInFrame
    regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy
    """
)

#: Combinator suffixes an aggregate may carry, innermost last (`sumIfMerge` = sum + If + Merge).
COMBINATORS: tuple[str, ...] = (
    "if",
    "array",
    "map",
    "mergestate",
    "merge",
    "simplestate",
    "state",
    "foreach",
    "distinct",
    "ordefault",
    "ornull",
    "resample",
    "argmin",
    "argmax",
)

#: Scalar functions, by ClickHouse's own categories (system.functions).
SCALAR_FUNCTIONS: frozenset[str] = _lower_words(
    """
    abs plus minus multiply divide intDiv intDivOrZero intDivOrNull modulo moduloOrZero
    positiveModulo negate gcd lcm max2 min2 isFinite isInfinite isNaN ifNotFinite
    ceil ceiling floor round roundBankers roundDown roundToExp2 roundAge roundDuration trunc truncate
    acos acosh asin asinh atan atan2 atanh cbrt cos cosh degrees e erf erfc exp exp10 exp2
    hypot intExp10 intExp2 lgamma ln log log10 log1p log2 pi pow power radians sigmoid sign
    sin sinh sqrt tan tanh tgamma widthBucket sqr factorial
    equals notEquals less greater lessOrEquals greaterOrEquals and or not xor
    if multiIf greatest least clamp
    coalesce ifNull nullIf isNull isNotNull assumeNotNull toNullable isZeroOrNull
    firstNonDefault
    length empty notEmpty lengthUTF8 char_length character_length
    lower upper lowerUTF8 upperUTF8 initcap initcapUTF8 reverse reverseUTF8
    concat concatWithSeparator concat_ws substring substr mid substringUTF8
    substringIndex substringIndexUTF8 left right leftUTF8 rightUTF8
    leftPad rightPad leftPadUTF8 rightPadUTF8 lpad rpad repeat space
    trim trimBoth trimLeft trimRight ltrim rtrim
    startsWith endsWith startsWithUTF8 endsWithUTF8 startsWithCaseInsensitive
    endsWithCaseInsensitive ascii char toValidUTF8 isValidUTF8 isValidASCII
    appendTrailingCharIfAbsent basename firstLine normalizeUTF8NFC normalizeUTF8NFD
    normalizeUTF8NFKC normalizeUTF8NFKD removeDiacriticsUTF8 soundex
    editDistance editDistanceUTF8 levenshteinDistance damerauLevenshteinDistance
    jaroSimilarity jaroWinklerSimilarity stringJaccardIndex stringJaccardIndexUTF8
    position positionCaseInsensitive positionUTF8 positionCaseInsensitiveUTF8 locate
    match like notLike ilike notILike extract extractAll extractGroups
    extractAllGroupsHorizontal extractAllGroupsVertical regexpExtract
    countMatches countMatchesCaseInsensitive countSubstrings countSubstringsCaseInsensitive
    multiSearchAny multiSearchFirstIndex multiSearchFirstPosition multiSearchAllPositions
    multiMatchAny multiMatchAnyIndex multiMatchAllIndices
    hasToken hasTokenCaseInsensitive hasSubsequence ngramDistance ngramSearch
    replaceAll replace replaceOne replaceRegexpAll replaceRegexpOne regexpQuoteMeta
    regexp_replace translate translateUTF8 overlay printf
    splitByChar splitByString splitByRegexp splitByWhitespace splitByNonAlpha
    arrayStringConcat alphaTokens ngrams tokens
    base64Encode base64Decode tryBase64Decode base64URLEncode base64URLDecode
    hex unhex bin unbin bitmaskToList bitmaskToArray bitPositionsToArray
    encodeURLComponent decodeURLComponent encodeURLFormComponent decodeURLFormComponent
    decodeHTMLComponent encodeXMLComponent decodeXMLComponent extractTextFromHTML
    protocol domain domainWithoutWWW topLevelDomain firstSignificantSubdomain
    cutToFirstSignificantSubdomain cutToFirstSignificantSubdomainWithWWW port path pathFull
    queryString fragment queryStringAndFragment netloc extractURLParameter
    extractURLParameters extractURLParameterNames URLHierarchy URLPathHierarchy cutWWW
    cutQueryString cutFragment cutQueryStringAndFragment cutURLParameter
    MD5 SHA1 SHA224 SHA256 SHA384 SHA512 halfMD5 sipHash64 sipHash128 cityHash64
    farmFingerprint64 farmHash64 metroHash64 murmurHash2_32 murmurHash2_64 murmurHash3_32
    murmurHash3_64 murmurHash3_128 xxHash32 xxHash64 xxh3 intHash32 intHash64 javaHash
    CRC32 CRC32IEEE CRC64 URLHash
    bitAnd bitOr bitXor bitNot bitShiftLeft bitShiftRight bitRotateLeft bitRotateRight
    bitTest bitTestAll bitTestAny bitCount bitHammingDistance bitSlice
    now now64 today yesterday toTimezone timezoneOf timeZoneOf toTimeZone
    toYear toQuarter toMonth toDayOfYear toDayOfMonth toDayOfWeek toHour toMinute toSecond
    toMillisecond toMicrosecond toUnixTimestamp toISOYear toISOWeek toWeek toYearWeek
    toYYYYMM toYYYYMMDD toYYYYMMDDhhmmss toDaysSinceYearZero toLastDayOfMonth
    toLastDayOfWeek toMonday toStartOfYear toStartOfISOYear toStartOfQuarter toStartOfMonth
    toStartOfWeek toStartOfDay toStartOfHour toStartOfMinute toStartOfSecond
    toStartOfMillisecond toStartOfMicrosecond toStartOfFiveMinutes toStartOfFiveMinute
    toStartOfTenMinutes toStartOfFifteenMinutes toStartOfInterval
    toRelativeYearNum toRelativeQuarterNum toRelativeMonthNum toRelativeWeekNum
    toRelativeDayNum toRelativeHourNum toRelativeMinuteNum toRelativeSecondNum
    date_trunc dateTrunc dateDiff date_diff timestampDiff timestamp_diff age dateName
    date_add dateAdd date_sub dateSub timestamp_add timestampAdd timestamp_sub timestampSub
    addSeconds addMinutes addHours addDays addWeeks addMonths addQuarters addYears
    addMilliseconds addMicroseconds addInterval
    subtractSeconds subtractMinutes subtractHours subtractDays subtractWeeks subtractMonths
    subtractQuarters subtractYears subtractMilliseconds subtractMicroseconds subtractInterval
    formatDateTime formatDateTimeInJodaSyntax monthName fromUnixTimestamp
    fromUnixTimestamp64Milli fromUnixTimestamp64Micro fromUnixTimestamp64Second
    toUnixTimestamp64Milli toUnixTimestamp64Micro toUnixTimestamp64Second
    makeDate makeDate32 makeDateTime makeDateTime64 timeSlot timeSlots
    toModifiedJulianDay fromModifiedJulianDay YYYYMMDDToDate YYYYMMDDhhmmssToDateTime
    toIntervalSecond toIntervalMinute toIntervalHour toIntervalDay toIntervalWeek
    toIntervalMonth toIntervalQuarter toIntervalYear toIntervalMillisecond
    parseDateTime parseDateTimeOrNull parseDateTimeBestEffort parseDateTimeBestEffortOrNull
    parseDateTimeBestEffortOrZero parseDateTime64BestEffort parseDateTime64BestEffortOrNull
    parseDateTimeInJodaSyntax
    toString toFixedString toStringCutToZero toDecimalString
    toInt8 toInt16 toInt32 toInt64 toInt128 toInt256 toUInt8 toUInt16 toUInt32 toUInt64
    toUInt128 toUInt256 toFloat32 toFloat64 toBool
    toInt8OrZero toInt16OrZero toInt32OrZero toInt64OrZero toUInt8OrZero toUInt16OrZero
    toUInt32OrZero toUInt64OrZero toFloat32OrZero toFloat64OrZero
    toInt8OrNull toInt16OrNull toInt32OrNull toInt64OrNull toUInt8OrNull toUInt16OrNull
    toUInt32OrNull toUInt64OrNull toFloat32OrNull toFloat64OrNull
    toInt32OrDefault toInt64OrDefault toUInt32OrDefault toUInt64OrDefault toFloat64OrDefault
    toDecimal32 toDecimal64 toDecimal128 toDecimal256 toDecimal32OrNull toDecimal64OrNull
    toDecimal128OrNull toDecimal32OrZero toDecimal64OrZero toDecimal128OrZero
    toDate toDate32 toDateTime toDateTime32 toDateTime64 toDateOrNull toDateOrZero
    toDateTimeOrNull toDateTimeOrZero toDateTime64OrNull toDateTime64OrZero toDate32OrNull
    toDateOrDefault toDateTimeOrDefault
    toUUID toUUIDOrNull toUUIDOrZero toIPv4 toIPv6 toIPv4OrNull toIPv6OrNull
    IPv4NumToString IPv4StringToNum IPv6NumToString IPv6StringToNum isIPv4String isIPv6String
    isIPAddressInRange IPv4CIDRToRange IPv6CIDRToRange
    accurateCast accurateCastOrNull accurateCastOrDefault toLowCardinality toTypeName
    UUIDStringToNum UUIDNumToString
    array range arrayConcat arrayElement arrayElementOrNull has hasAll hasAny hasSubstr
    indexOf countEqual arrayEnumerate arrayEnumerateUniq arrayEnumerateDense arrayPopBack
    arrayPopFront arrayPushBack arrayPushFront arrayResize arraySlice arraySort
    arrayReverseSort arrayPartialSort arrayUniq arrayDistinct arrayIntersect arrayUnion
    arrayExcept arraySymmetricDifference arrayJoin arrayCompact arrayZip arrayFlatten flatten
    arrayReverse arrayMap arrayFilter arrayFill arrayReverseFill arraySplit arrayReverseSplit
    arrayExists arrayAll arrayFirst arrayFirstOrNull arrayLast arrayLastOrNull
    arrayFirstIndex arrayLastIndex arrayMin arrayMax arraySum arrayAvg arrayProduct
    arrayCount arrayCumSum arrayCumSumNonNegative arrayDifference arrayAUC arrayROCAUC
    arrayStringConcat arrayShingles arrayRotateLeft arrayRotateRight arrayShiftLeft
    arrayShiftRight arrayWithConstant arrayFold arrayTopK arrayBottomK replicate
    emptyArrayString emptyArrayUInt64 emptyArrayInt64 emptyArrayFloat64
    tuple tupleElement untuple tupleNames tuplePlus tupleMinus tupleMultiply tupleDivide
    tupleNegate tupleConcat tupleToNameValuePairs flattenTuple dotProduct
    map mapKeys mapValues mapContains mapContainsKey mapContainsValue mapFromArrays
    mapFilter mapApply mapExists mapAll mapSort mapReverseSort mapAdd mapSubtract mapUpdate
    mapConcat mapExtractKeyLike mapContainsKeyLike extractKeyValuePairs
    JSONHas JSONLength JSONType JSONExtract JSONExtractString JSONExtractInt JSONExtractUInt
    JSONExtractFloat JSONExtractBool JSONExtractRaw JSONExtractArrayRaw JSONExtractKeys
    JSONExtractKeysAndValues JSONArrayLength isValidJSON toJSONString
    simpleJSONHas simpleJSONExtractString simpleJSONExtractInt simpleJSONExtractUInt
    simpleJSONExtractFloat simpleJSONExtractBool simpleJSONExtractRaw
    visitParamHas visitParamExtractString visitParamExtractInt visitParamExtractUInt
    visitParamExtractFloat visitParamExtractBool visitParamExtractRaw
    rand rand32 rand64 randCanonical randUniform randNormal generateUUIDv4 generateUUIDv7
    materialize identity ignore isConstant finalizeAggregation
    formatReadableSize formatReadableQuantity formatReadableTimeDelta
    formatReadableDecimalSize parseReadableSize bar transform countDigits
    runningDifference neighbor
    tumble tumbleStart tumbleEnd hop hopStart hopEnd
    """
)

# Pieces of syntax whose sqlglot nodes are functions though the user wrote no function name.
# (Tuples, `a[1]`, `t.1`, INTERVAL, `||`, DIV, `= ANY (…)` are operators, not function nodes.)
_ALLOWED_SYNTAX: tuple[str, ...] = (
    "CAST(a AS String)",
    "a::Int64",
    "CASE WHEN a THEN b ELSE c END",
    "CASE a WHEN 1 THEN b END",
    "a ? b : c",
    "[a, b]",
    "EXTRACT(HOUR FROM a)",
    "a REGEXP 'x'",
    "TRIM(BOTH ' ' FROM a)",
    "SUBSTRING(a FROM 1 FOR 2)",
    "POSITION('a' IN b)",
    "count(DISTINCT a)",
    "EXISTS (SELECT 1)",
    "DATE '2024-01-01'",
    "TIMESTAMP '2024-01-01 00:00:00'",
)

# sqlglot's own catch-all nodes: they carry the function name the user wrote, which is checked.
_NAMED = (
    exp.Anonymous,
    exp.AnonymousAggFunc,
    exp.CombinedAggFunc,
    exp.ParameterizedAgg,
    exp.CombinedParameterizedAgg,
)

# Arities tried when deriving what class a name parses to (names differ in what they accept).
_PROBE_ARGUMENTS = ("()", "(a)", "(a, b)", "(a, b, c)")


def _is_aggregate(name: str) -> bool:
    """`name` (lower case) is an allowed aggregate, possibly with combinators (up to three)."""
    candidates = [name]
    for _ in range(3):
        stripped = []
        for candidate in candidates:
            if candidate in AGGREGATE_FUNCTIONS:
                return True
            stripped += [
                candidate[: -len(suffix)]
                for suffix in COMBINATORS
                if candidate.endswith(suffix) and len(candidate) > len(suffix)
            ]
        candidates = stripped
    return any(candidate in AGGREGATE_FUNCTIONS for candidate in candidates)


def name_allowed(name: str) -> bool:
    """Whether a function called `name` (any case) may appear in analysts' SQL."""
    lowered = name.lower()
    return lowered in SCALAR_FUNCTIONS or _is_aggregate(lowered)


@functools.cache
def allowed_classes() -> frozenset[type[exp.Expression]]:
    """The typed sqlglot function classes that allowed names and syntax parse to."""
    classes: set[type[exp.Expression]] = set()

    def collect(sql: str) -> None:
        try:
            tree = sqlglot.parse_one(f"SELECT {sql}", dialect="clickhouse")
        except (SqlglotError, ValueError, IndexError, TypeError):
            return  # this arity does not fit this function's builder; another probe will
        for node in tree.walk():
            if isinstance(node, exp.Func) and not isinstance(node, _NAMED):
                classes.add(type(node))

    # Only names sqlglot has a builder or parser for can become typed nodes; the rest parse to
    # the catch-all nodes, checked by name. Combinator forms count (`countIf` → CountIf).
    parser = Dialect.get_or_raise("clickhouse").parser_class
    known = set(parser.FUNCTIONS) | set(parser.FUNCTION_PARSERS)
    names = set(SCALAR_FUNCTIONS | AGGREGATE_FUNCTIONS)
    names |= {name + suffix for name in AGGREGATE_FUNCTIONS for suffix in COMBINATORS}
    for name in sorted(n for n in names if n.upper() in known):
        for arguments in _PROBE_ARGUMENTS:
            collect(name + arguments)
    for syntax in _ALLOWED_SYNTAX:
        collect(syntax)
    return frozenset(classes)


def function_name(node: exp.Func) -> str | None:
    """The function name as written in the SQL text, when sqlglot kept it."""
    if isinstance(node, _NAMED):
        return str(node.this)
    name = node.meta.get("clickhouse_name") if node.meta else None
    return str(name) if name else None


def analyst_function_allowed(node: exp.Func) -> bool:
    """Whether one function node may appear in analysts' SQL (see the module docstring)."""
    name = function_name(node)
    if isinstance(node, _NAMED):
        return name is not None and name_allowed(name)
    if name is not None and not name_allowed(name):
        return False
    return type(node) in allowed_classes()
