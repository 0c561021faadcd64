package orderflow.connect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;
import org.junit.jupiter.api.Test;

class JsonHeadersTest {

    private static SourceRecord record(ConnectHeaders headers) {
        return new SourceRecord(Map.of("p", 1), Map.of("o", 2), "order-export", 2,
            Schema.STRING_SCHEMA, "key-1", Schema.STRING_SCHEMA, "{\"name\":\"Zoë ☃\"}", 1234L, headers);
    }

    private static SourceRecord withJson(String name, String json) {
        ConnectHeaders headers = new ConnectHeaders();
        headers.addString("id", "e1");
        headers.addString(name, json);
        return record(headers);
    }

    private static JsonHeaders<SourceRecord> transform(Map<String, ?> config) {
        JsonHeaders<SourceRecord> smt = new JsonHeaders<>();
        smt.configure(config);
        return smt;
    }

    private static List<String> names(SourceRecord r) {
        List<String> out = new ArrayList<>();
        for (Header h : r.headers()) {
            out.add(h.key());
        }
        return out;
    }

    @Test
    void pairsBecomeHeadersInOrder() {
        SourceRecord in = withJson("orderflow.headers",
            "[[\"event_type\", \"OrderExportRequested\"], [\"event_id\", \"e1\"], [\"tracestate\", null], [\"x-ü\", \"välue\"]]");
        SourceRecord out = transform(Map.of()).apply(in);
        assertEquals(List.of("id", "event_type", "event_id", "tracestate", "x-ü"), names(out));
        assertEquals("OrderExportRequested", out.headers().lastWithName("event_type").value());
        assertNull(out.headers().lastWithName("tracestate").value());
        assertEquals("välue", out.headers().lastWithName("x-ü").value());
        for (Header h : out.headers()) {
            if (!h.key().equals("id")) {
                assertEquals(Schema.OPTIONAL_STRING_SCHEMA, h.schema());
            }
        }
        // Everything else is the record's own.
        assertEquals(in.topic(), out.topic());
        assertEquals(in.kafkaPartition(), out.kafkaPartition());
        assertEquals(in.key(), out.key());
        assertEquals(in.value(), out.value());
        assertEquals(in.timestamp(), out.timestamp());
        assertEquals(in.sourceOffset(), out.sourceOffset());
        // The input record's headers are left alone.
        assertEquals(List.of("id", "orderflow.headers"), names(in));
    }

    @Test
    void anEmptyListRemovesTheHeader() {
        SourceRecord out = transform(Map.of()).apply(withJson("orderflow.headers", "[]"));
        assertEquals(List.of("id"), names(out));
    }

    @Test
    void aRecordWithoutTheHeaderIsUnchanged() {
        SourceRecord in = withJson("other", "[[\"a\", \"b\"]]");
        assertSame(in, transform(Map.of()).apply(in));
    }

    @Test
    void theHeaderNameIsConfigurable() {
        SourceRecord out = transform(Map.of("header", "h")).apply(withJson("h", "[[\"a\", \"b\"]]"));
        assertEquals(List.of("id", "a"), names(out));
    }

    @Test
    void malformedValuesFailNamingTheHeaderAndTopic() {
        JsonHeaders<SourceRecord> smt = transform(Map.of());
        for (String bad : List.of("", "not json", "[[\"a\", \"b\"]] x", "{\"a\": \"b\"}", "null", "[\"a\", \"b\"]",
                "[[\"a\"]]", "[[\"a\", \"b\", \"c\"]]", "[[\"a\", 1]]", "[[null, \"b\"]]", "[[\"a\", [\"b\"]]]")) {
            DataException e = assertThrows(DataException.class, () -> smt.apply(withJson("orderflow.headers", bad)), bad);
            assertTrue(e.getMessage().contains("'orderflow.headers'") && e.getMessage().contains("'order-export'"),
                e.getMessage());
        }
        ConnectHeaders headers = new ConnectHeaders();
        headers.add("orderflow.headers", 5, Schema.INT32_SCHEMA);
        assertThrows(DataException.class, () -> smt.apply(record(headers)));
    }

    @Test
    void isVersioned() {
        assertEquals("1", new JsonHeaders<SourceRecord>().version());
    }
}
