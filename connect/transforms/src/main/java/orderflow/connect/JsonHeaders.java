package orderflow.connect;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.components.Versioned;
import org.apache.kafka.connect.connector.ConnectRecord;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.header.Headers;
import org.apache.kafka.connect.transforms.Transformation;

/**
 * Turns one header holding a JSON list of [name, value] pairs into one header per pair.
 *
 * <p>The outbox row keeps its record headers in one JSON column; Debezium's outbox EventRouter
 * places that column as a single header (table.fields.additional.placement=headers:header:NAME).
 * This transformation removes that header and adds each pair, in the list's order, as a header
 * with an optional string schema: a JSON null value stays a null header. A header that is not
 * such a list fails the record with a {@link DataException} naming the header and the topic, so
 * the task stops visibly instead of publishing a record without its headers. A record without
 * the header passes unchanged.
 */
public class JsonHeaders<R extends ConnectRecord<R>> implements Transformation<R>, Versioned {

    public static final String HEADER_CONFIG = "header";
    public static final String HEADER_DEFAULT = "orderflow.headers";

    public static final ConfigDef CONFIG_DEF = new ConfigDef()
        .define(
            HEADER_CONFIG,
            ConfigDef.Type.STRING,
            HEADER_DEFAULT,
            new ConfigDef.NonEmptyString(),
            ConfigDef.Importance.HIGH,
            "The header whose value is a JSON list of [name, value] pairs (value a string or null)"
                + " to replace with one header per pair.");

    private static final ObjectMapper MAPPER =
        new ObjectMapper().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private String header = HEADER_DEFAULT;

    @Override
    public String version() {
        return "1";
    }

    @Override
    public ConfigDef config() {
        return CONFIG_DEF;
    }

    @Override
    public void configure(Map<String, ?> configs) {
        header = new AbstractConfig(CONFIG_DEF, configs).getString(HEADER_CONFIG);
    }

    @Override
    public R apply(R record) {
        Header source = record.headers().lastWithName(header);
        if (source == null) {
            return record;
        }
        List<String[]> pairs = parse(source.value(), record.topic());
        Headers headers = record.headers().duplicate();
        headers.remove(header);
        for (String[] pair : pairs) {
            headers.add(pair[0], pair[1], Schema.OPTIONAL_STRING_SCHEMA);
        }
        return record.newRecord(
            record.topic(),
            record.kafkaPartition(),
            record.keySchema(),
            record.key(),
            record.valueSchema(),
            record.value(),
            record.timestamp(),
            headers);
    }

    private List<String[]> parse(Object value, String topic) {
        if (!(value instanceof String)) {
            throw invalid(topic, "its value is "
                + (value == null ? "null" : "a " + value.getClass().getName()) + ", not JSON text");
        }
        JsonNode root;
        try {
            root = MAPPER.readTree((String) value);
        } catch (JsonProcessingException e) {
            throw new DataException(message(topic, "its value is not JSON: " + e.getOriginalMessage()), e);
        }
        if (root == null || !root.isArray()) {
            throw invalid(topic, "its value is not a JSON list");
        }
        List<String[]> pairs = new ArrayList<>(root.size());
        for (int i = 0; i < root.size(); i++) {
            JsonNode pair = root.get(i);
            if (!pair.isArray() || pair.size() != 2 || !pair.get(0).isTextual()
                || !(pair.get(1).isTextual() || pair.get(1).isNull())) {
                throw invalid(topic, "item " + i + " is not a [name, value] pair of a string and a string or null");
            }
            pairs.add(new String[] {pair.get(0).textValue(), pair.get(1).isNull() ? null : pair.get(1).textValue()});
        }
        return pairs;
    }

    private DataException invalid(String topic, String why) {
        return new DataException(message(topic, why));
    }

    private String message(String topic, String why) {
        return "JsonHeaders: header '" + header + "' of a record for topic '" + topic + "' is not a JSON list of"
            + " [name, value] pairs: " + why;
    }

    @Override
    public void close() {
    }
}
