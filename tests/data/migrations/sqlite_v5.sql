-- A SQLite database as webhook-dsl c5037f3 (schema version 5) wrote it; see make_v5.py.
BEGIN TRANSACTION;
CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    prefix TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
INSERT INTO "api_keys" VALUES('2f4aa6446001aa0f6aff6d0ca18031de9f95cc17250c7a0809b1230bb2afcec8','acme','wdsl_fixtur','ci',1.796208894251013279e+09);
INSERT INTO "api_keys" VALUES('165f4f295c37011faf3a95807e70549524368d8ffdcd72a79ce75aac91fd8888','globex','wdsl_fixtur','',1.79620889425610780719e+09);
CREATE TABLE call_logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id TEXT NOT NULL DEFAULT '',
    session_id TEXT NOT NULL,
    at REAL NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'done'
);
INSERT INTO "call_logs" VALUES(1,'acme','S1',1700000000.0,'{"at":1700000000.0,"trigger":"check_order_0","method":"GET","url":"https://erp.example/api/check_order_0","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[]}','done');
INSERT INTO "call_logs" VALUES(2,'acme','S1',1700000060.0,'{"at":1700000060.0,"trigger":"check_order_1","method":"GET","url":"https://erp.example/api/check_order_1","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[]}','done');
INSERT INTO "call_logs" VALUES(3,'acme','S1',1700000120.0,'{"at":1700000120.0,"trigger":"check_order_2","method":"GET","url":"https://erp.example/api/check_order_2","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[]}','done');
INSERT INTO "call_logs" VALUES(4,'acme','S1',1700000180.0,'{"at":1700000180.0,"trigger":"check_order_3","method":"GET","url":"https://erp.example/api/check_order_3","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[]}','done');
INSERT INTO "call_logs" VALUES(5,'acme','S1',1700000240.0,'{"at":1700000240.0,"trigger":"place_order","method":"GET","url":"https://erp.example/api/place_order","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{"last_order":"O-1"},"warnings":[]}','done');
INSERT INTO "call_logs" VALUES(6,'acme','S1',1700000300.0,'{"at":1700000301.0,"trigger":"refund","method":"GET","url":"https://erp.example/api/refund","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[]}','done');
INSERT INTO "call_logs" VALUES(7,'acme','S1',1700000360.0,'{"at":1700000360.0,"trigger":"cancel","method":"GET","url":"https://erp.example/api/cancel","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[],"expires_at":1700000390.0}','started');
INSERT INTO "call_logs" VALUES(8,'acme','S2',1700000030.0,'{"at":1700000030.0,"trigger":"check_order_s2","method":"GET","url":"https://erp.example/api/check_order_s2","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[]}','done');
INSERT INTO "call_logs" VALUES(9,'globex','S1',1700000000.0,'{"at":1700000000.0,"trigger":"ticket_0","method":"GET","url":"https://erp.example/api/ticket_0","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[]}','done');
INSERT INTO "call_logs" VALUES(10,'globex','S1',1700000090.0,'{"at":1700000090.0,"trigger":"ticket_1","method":"GET","url":"https://erp.example/api/ticket_1","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[]}','done');
INSERT INTO "call_logs" VALUES(11,'globex','S1',1700000180.0,'{"at":1700000180.0,"trigger":"ticket_2","method":"GET","url":"https://erp.example/api/ticket_2","status":200,"ok":true,"duration_ms":12.5,"client_data_merged":{},"warnings":[]}','done');
CREATE TABLE dashboard_sessions (
    token_hash TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
INSERT INTO "dashboard_sessions" VALUES('tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt','acme','2f4aa6446001aa0f6aff6d0ca18031de9f95cc17250c7a0809b1230bb2afcec8',1796208894.2578,4102444800.0);
CREATE TABLE secrets (
    company_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (company_id, name)
) WITHOUT ROWID;
INSERT INTO "secrets" VALUES('acme','acme_pin','fixture-pin-00002',1.796208894257702589e+09);
INSERT INTO "secrets" VALUES('acme','erp_token','fixture-erp-token-0001',1.79620889425749754903e+09);
INSERT INTO "secrets" VALUES('globex','helpdesk_api_key','fixture-helpdesk-0003',1.7962088942577409744e+09);
CREATE TABLE sessions (
    company_id TEXT NOT NULL DEFAULT '',
    id TEXT NOT NULL,
    assistant_id TEXT NOT NULL DEFAULT '',
    client_data TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (company_id, id)
);
INSERT INTO "sessions" VALUES('acme','S1','asst_1','{"customer":"Ana Lima","nested":{"list":[1,2.5,null,true]},"text":"é😀","big":1180591620717411303424,"last_order":"O-1"}',1.79620889424704337127e+09,1.79620889424772548674e+09);
INSERT INTO "sessions" VALUES('acme','S2','asst_2','{}',1.79620889424727535246e+09,1.79620889424727535246e+09);
INSERT INTO "sessions" VALUES('globex','S1','','{"plan":"gold"}',1796208894.24736,1796208894.24736);
CREATE TABLE write_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
INSERT INTO "write_probe" VALUES(1,1.79620889425790810581e+09);
CREATE INDEX sessions_by_id ON sessions (id);
CREATE INDEX sessions_by_company_updated ON sessions (company_id, updated_at);
CREATE INDEX call_logs_by_company_session ON call_logs (company_id, session_id, seq);
CREATE INDEX api_keys_by_company ON api_keys (company_id);
CREATE INDEX dashboard_sessions_by_key ON dashboard_sessions (key_hash);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('call_logs',11);
COMMIT;
PRAGMA user_version = 5;
